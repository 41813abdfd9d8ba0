"""A member's checkpoints in the single-run format: the file `train.py` would have written at that step, so a
member continues (or is extended) alone under the normal trainer."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from sip_train.callbacks import RunRecord, StepTimer
from sip_train.checkpoints import IDENTITY_KEY, LAST, checkpoint_dir


def _progress(count: int, done: int | None = None, last: bool | None = None) -> dict[str, Any]:
    done = count if done is None else done
    progress = {"total": {"ready": count, "completed": done, "started": count, "processed": done},
                "current": {"ready": count, "completed": done, "started": count, "processed": done}}
    return progress if last is None else {**progress, "is_last_batch": last}


@dataclass
class LoopCounts:
    """What Lightning's loops would have counted in the single run: validation batches run inside fit and by
    `trainer.validate` (total, and in the latest pass)."""

    fit_val_batches: int = 0
    fit_val_latest: int = 0
    validate_batches: int = 0
    validate_latest: int = 0

    def loops(self, step: int, phase: str) -> dict[str, Any]:
        """Lightning's `loops` state at `step`: phase "start" (train start), "fit" (a save after a validation
        during fit), "stop" (a save as a signal stops fit) or "end" (after fit)."""
        ended = phase == "end"
        stepped = 0 if phase == "start" else step if ended else step - 1  # Lightning counts the step after its save
        batches = _progress(step, last=False)
        if phase == "stop":  # Lightning stops in the step's end hooks: the step is processed, not yet completed
            for counts in (batches["total"], batches["current"]):
                counts["completed"] = step - 1
        optimizer = {"step": {"total": {"ready": 0, "completed": 0}, "current": {"ready": 0, "completed": 0}},
                     "zero_grad": {"total": {"ready": 0, "completed": 0, "started": 0},
                                   "current": {"ready": 0, "completed": 0, "started": 0}}}
        val_progress = _progress(self.fit_val_batches, last=self.fit_val_batches > 0)
        val_progress["current"] = _progress(self.fit_val_latest)["current"]
        validate = _progress(self.validate_batches, last=self.validate_batches > 0)
        validate["current"] = _progress(self.validate_latest)["current"]
        epoch = _progress(0 if phase == "start" else 1, done=1 if ended else 0)
        empty_state: dict[str, Any] = {"state_dict": {}}
        return {
            "fit_loop": {
                **empty_state,
                "epoch_loop.state_dict": {"_batches_that_stepped": stepped},
                "epoch_loop.batch_progress": batches,
                "epoch_loop.scheduler_progress": {"total": {"ready": 0, "completed": 0},
                                                  "current": {"ready": 0, "completed": 0}},
                "epoch_loop.automatic_optimization.state_dict": {},
                "epoch_loop.automatic_optimization.optim_progress": {"optimizer": optimizer},
                "epoch_loop.manual_optimization.state_dict": {},
                "epoch_loop.manual_optimization.optim_step_progress": {
                    "total": {"ready": step, "completed": step}, "current": {"ready": step, "completed": step}},
                "epoch_loop.val_loop.state_dict": {},
                "epoch_loop.val_loop.batch_progress": val_progress,
                "epoch_progress": epoch,
            },
            "validate_loop": {**empty_state, "batch_progress": validate},
            "test_loop": {**empty_state, "batch_progress": _progress(0, last=False)},
            "predict_loop": {**empty_state, "batch_progress": _progress(0)},
        }


@dataclass
class MemberCheckpoints:
    """A member's last.ckpt and best-step<N>.ckpt, kept as the single run's ModelCheckpoint keeps them."""

    run_dir: Path
    monitor: str
    identity: dict[str, Any]
    sessions: int = 1
    earlier_wall_time_s: float = 0.0
    counts: LoopCounts = field(default_factory=LoopCounts)

    def __post_init__(self) -> None:
        self.callback = ModelCheckpoint(dirpath=checkpoint_dir(self.run_dir), filename="best-step{step}",
                                        auto_insert_metric_name=False, monitor=self.monitor, mode="min", save_top_k=1,
                                        save_last=True, enable_version_counter=False)
        self.timer = StepTimer()

    @property
    def last(self) -> Path:
        return checkpoint_dir(self.run_dir) / LAST

    def restore(self, checkpoint: dict) -> None:
        """Continue the records of a checkpoint (best so far, sessions, wall time, step times, loop counts)."""
        callbacks = checkpoint.get("callbacks", {})
        if self.callback.state_key in callbacks:
            self.callback.load_state_dict(callbacks[self.callback.state_key])
        record = RunRecord(self.identity)
        if record.state_key in callbacks:
            record.load_state_dict(callbacks[record.state_key])
            self.sessions, self.earlier_wall_time_s = record.sessions, record._earlier_s
        if self.timer.state_key in callbacks:
            self.timer.load_state_dict(callbacks[self.timer.state_key])
        fit = checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
        validate = checkpoint["loops"]["validate_loop"]["batch_progress"]
        self.counts = LoopCounts(fit["total"]["completed"], fit["current"]["completed"], validate["total"]["completed"],
                                 validate["current"]["completed"])

    def document(self, step: int, phase: str, wall_time_s: float, state_dict: dict[str, torch.Tensor],
                 optimizer_state: dict[str, Any], hyper_parameters: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint the single run would write at `step` (see LoopCounts.loops for `phase`)."""
        return {
            "epoch": 1 if phase == "end" else 0,
            "global_step": step,
            "pytorch-lightning_version": lightning.__version__,
            "state_dict": state_dict,
            "loops": self.counts.loops(step, phase),
            "callbacks": {self.timer.state_key: self.timer.state_dict(),
                          self.callback.state_key: self.callback.state_dict(),
                          "RunRecord": {"sessions": self.sessions, "wall_time_s": self.earlier_wall_time_s + wall_time_s}},
            "optimizer_states": [optimizer_state],
            "lr_schedulers": [],
            "hparams_name": None,
            "hyper_parameters": hyper_parameters,
            IDENTITY_KEY: self.identity,
        }

    def save_last(self, make) -> None:
        """Write last.ckpt (`make()` returns the document; the callback state records the file)."""
        self.callback.last_model_path = str(self.last)
        _save(make(), self.last)

    def save_best(self, step: int, score: float, make) -> None:
        """After a validation during fit: a new best-step<step>.ckpt if `score` improved (the previous best
        removed), as ModelCheckpoint(save_top_k=1) does."""
        score_t = torch.tensor(score)
        self.callback.current_score = score_t
        best = self.callback.best_model_score
        if best is not None and not score_t < best:
            return
        path = checkpoint_dir(self.run_dir) / f"best-step{step}.ckpt"
        previous = self.callback.best_model_path
        self.callback.best_k_models = {str(path): score_t}
        self.callback.kth_best_model_path, self.callback.kth_value = str(path), score_t
        self.callback.best_model_path, self.callback.best_model_score = str(path), score_t
        _save(make(), path)
        if previous and previous != str(path) and Path(previous).exists():
            Path(previous).unlink()


def _save(checkpoint: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
