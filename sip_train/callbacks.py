"""Callbacks every run uses: step timing, the latest validation, divergence and preemption handling
(progress: sip_train.progress)."""
from __future__ import annotations

import logging
import os
import signal
import statistics
import threading
import time
from typing import Sequence

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from sip_train.checkpoints import IDENTITY_KEY

log = logging.getLogger(__name__)


class StepTimer(Callback):
    """Wall-clock time per training iteration, measured start to start of consecutive steps.

    Start-to-start intervals include data generation, the update and logging, and need no
    device synchronisation: on a GPU they settle at the true throughput. The time a validation
    takes is left out of the interval it falls into; checkpoint time falls into a few intervals,
    which the median ignores. The module writes the latest one with its training metrics
    (time/step_ms), so every logged value is a fresh interval.
    """

    def __init__(self) -> None:
        self.step_times_ms: list[float] = []
        self._last_start: float | None = None
        self._last_step = 0
        self._validation_start: float | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        now, step = time.perf_counter(), trainer.global_step
        if self._last_start is not None and step > self._last_step:
            # per update: a Lightning step may make several (InverseProblemModule.updates_per_step)
            self.step_times_ms.append(1000 * (now - self._last_start) / (step - self._last_step))
        self._last_start, self._last_step = now, step

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._last_start is not None and self._validation_start is not None:
            self._last_start += time.perf_counter() - self._validation_start

    @property
    def median_ms(self) -> float | None:
        """Median step time in milliseconds (None before two steps)."""
        return statistics.median(self.step_times_ms) if self.step_times_ms else None

    def statistics(self) -> dict[str, float | int | None]:
        """Step-time statistics over every session of the run, for summary.json."""
        times = sorted(self.step_times_ms)
        return {"step_time_ms_median": self.median_ms,
                "step_time_ms_mean": statistics.fmean(times) if times else None,
                "step_time_ms_p90": times[int(0.9 * (len(times) - 1))] if times else None,
                "step_time_samples": len(times)}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Kept in the checkpoint, so a resumed run's statistics cover all its sessions."""
        return {"step_times_ms": torch.tensor(self.step_times_ms, dtype=torch.float32)}

    def load_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        self.step_times_ms = [*state_dict["step_times_ms"].tolist(), *self.step_times_ms]


def validation_metrics(trainer: Trainer) -> dict[str, float]:
    """The latest validation's metrics (the val/... entries of callback_metrics, prefix dropped) as floats:
    one read from the device, made once per validation."""
    return {key.removeprefix("val/"): float(value) for key, value in trainer.callback_metrics.items()
            if key.startswith("val/")}


class LatestValidation(Callback):
    """The metrics and step of the latest validation, kept on the host: what the progress and the run's
    summary show, without reading the device at every step, and still there after Lightning clears its
    metrics when fit starts (the step-0 validation of `validate_at_start`)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.step: int | None = None

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.sanity_checking:
            self.metrics, self.step = validation_metrics(trainer), trainer.global_step


class RunRecord(Callback):
    """Writes the run's identity into every checkpoint and counts its sessions and wall time across resumes.

    The identity (see `sip_train.checkpoints.run_identity`) is what a later session must match to
    continue; sessions and wall time live in the checkpoint's callback state.
    """

    def __init__(self, identity: dict) -> None:
        self.identity = identity
        self.sessions = 1
        self._earlier_s = 0.0
        self._start = time.perf_counter()

    @property
    def wall_time_s(self) -> float:
        """Seconds spent in this run over all its sessions (up to the last checkpoint for earlier ones)."""
        return self._earlier_s + time.perf_counter() - self._start

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[IDENTITY_KEY] = self.identity

    def state_dict(self) -> dict[str, float | int]:
        return {"sessions": self.sessions, "wall_time_s": self.wall_time_s}

    def load_state_dict(self, state_dict: dict[str, float | int]) -> None:
        self.sessions = int(state_dict["sessions"]) + 1
        self._earlier_s = float(state_dict["wall_time_s"])


class DivergedError(RuntimeError):
    """Training produced a non-finite loss, prediction or parameter."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"training diverged at step {step}: non-finite {what}")
        self.step = step


def divergence_check_due(step: int, updates: int, check_every: int, val_every: int, max_steps: int) -> bool:
    """Whether a training step of `updates` updates that ends at global step `step` is followed by a divergence
    check: its updates reached a multiple of `check_every` or of `val_every`, or max_steps (> 0)."""
    def passed(every: int) -> bool:
        return step // every != (step - updates) // every

    return passed(check_every) or passed(val_every) or step >= max_steps > 0


class DivergenceGuard(Callback):
    """Stops a run at its first non-finite loss, prediction or parameter, before it is checkpointed.

    Each step only updates a flag on the device (no host synchronisation); the flag is read every
    `check_every` steps and before every validation, checkpoint and the end of training, so a
    non-finite state is never saved. A checkpoint of the initial weights is written at the start,
    so a run that diverges at once still leaves a last finite checkpoint.
    """

    def __init__(self, last_checkpoint: str, check_every: int = 10) -> None:
        self.last_checkpoint = last_checkpoint
        self.check_every = check_every
        self._first_bad_step: torch.Tensor | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=pl_module.device)
        # rank 0's answer for all: saving is a collective, so every rank must take the same branch
        if not trainer.strategy.broadcast(os.path.exists(self.last_checkpoint)):
            trainer.save_checkpoint(self.last_checkpoint, weights_only=False)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        # outputs["loss"] holds one value per update of this step (several with updates_per_step > 1)
        bad = torch.isfinite(outputs["loss"]).reshape(-1).logical_not_()
        bad[-1] |= torch.isfinite(outputs["x"]).all().logical_not_()  # x: the prediction of the last update
        step, updates = trainer.global_step, bad.numel()
        first_bad = bad.int().argmax() + (step - updates + 1)  # the global step after the first bad update
        self._first_bad_step = torch.where((self._first_bad_step < 0) & bad.any(), first_bad, self._first_bad_step)
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else 1
        if divergence_check_due(step, updates, self.check_every, interval, trainer.max_steps):
            self.check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self.check(trainer, pl_module)  # whoever saves (ModelCheckpoint at a max_time stop, train's final save)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and self.is_finite(pl_module):
            trainer.save_checkpoint(self.last_checkpoint, weights_only=False)  # preemption: keep every finished step

    def _state(self, pl_module: LightningModule) -> tuple[int, bool]:
        """(first step with a non-finite loss or prediction or -1, whether all parameters are finite),
        read from the device in one transfer."""
        parameters_finite = torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all()
        bad_step = self._first_bad_step if self._first_bad_step is not None else torch.full_like(parameters_finite, -1,
                                                                                               dtype=torch.long)
        state = torch.stack([bad_step.to(parameters_finite.device), parameters_finite.long()])
        if pl_module.trainer.world_size > 1:  # one decision for all ranks: the checks guard collective saves
            states = pl_module.trainer.strategy.all_gather(state).reshape(-1, 2)
            bad_steps = states[:, 0][states[:, 0] >= 0]
            state = torch.stack([bad_steps.min() if len(bad_steps) else states.new_tensor(-1), states[:, 1].min()])
        bad_step, finite = state.tolist()
        return bad_step, bool(finite)

    def is_finite(self, pl_module: LightningModule) -> bool:
        """Whether every step so far and every parameter is finite (synchronises with the device)."""
        bad_step, parameters_finite = self._state(pl_module)
        return bad_step < 0 and parameters_finite

    def check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Raise DivergedError if the run has gone non-finite."""
        bad_step, parameters_finite = self._state(pl_module)
        if bad_step >= 0:
            raise DivergedError(bad_step, "loss or prediction")
        if not parameters_finite:
            raise DivergedError(trainer.global_step, "network parameters")


class BufferAverage(Callback):
    """Under DDP, averages the network's floating-point buffers (BatchNorm running statistics) over the ranks
    before each validation and at the end of training.

    DDP synchronises gradients, not these buffers (SyncBatchNorm would, but only on GPUs), so each rank
    would otherwise validate, and rank 0 save, a network of its own.
    """

    def _average(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            for buffer in pl_module.buffers():
                if buffer.is_floating_point():
                    torch.distributed.all_reduce(buffer)
                    buffer /= trainer.world_size

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._average(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._average(trainer, pl_module)


#: The signals that stop a run after the step in progress (SLURM's warning, submitit's preemption/timeout).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preemption(Callback):
    """SIGTERM, SIGUSR1 (SLURM's warning signal) and SIGUSR2 (submitit's preemption/timeout signal) stop
    training after the step in progress; a validation in progress is finished first.

    `DivergenceGuard` then checkpoints the finished steps and `train` records the run as interrupted;
    `hand_on` afterwards passes the signal to the handler that was there before (submitit's, which
    requeues the job and exits), so the requeued job continues from that checkpoint. SIGUSR1 is left
    to Lightning when its SLURM auto-requeue handles it, and SIGTERM under DDP (Lightning stops all
    ranks together).
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._handlers_before: dict[int, object] = {}
        self._installed = False

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, not at fit start: Lightning installs its SIGTERM handler in between, which would abort validations
        environment = trainer._accelerator_connector.cluster_environment
        lightning_requeues = isinstance(environment, SLURMEnvironment) and environment.auto_requeue
        self.install([signum for signum in STOP_SIGNALS if not (signum == signal.SIGTERM and trainer.world_size > 1)
                      and not (lightning_requeues and signum == environment.requeue_signal)])

    def install(self, signums: Sequence[int] = STOP_SIGNALS) -> None:
        """Catch `signums` from now on (in the main thread only; an ensemble calls this itself), keeping the
        handlers found for `restore` and `hand_on`."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in signums:
            self._handlers_before[signum] = signal.signal(signum, self._handle)
        self._installed = True

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("received signal %d: saving a checkpoint and stopping after this step", signum)
        self.received = signum

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self.received is not None:
            raise SIGTERMException

    def restore(self) -> None:
        """Put back the handlers found at train start (before Lightning restores its own originals)."""
        if self._installed:
            for signum, handler in self._handlers_before.items():
                signal.signal(signum, handler)
            self._installed = False

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.restore()

    def hand_on(self) -> None:
        """Call the handler a received signal had before this run (submitit: requeue and exit), if any.

        Read after training, when Lightning has put back the handlers it found (its own SIGTERM handler,
        which only announces the signal, is gone by then)."""
        handler = signal.getsignal(self.received) if self.received is not None else None
        if callable(handler):
            handler(self.received, None)
