"""The training metrics of a run: on each log step one row, written straight to the loggers."""
from __future__ import annotations

import torch
from lightning.pytorch import Trainer

from sip_train.callbacks import StepTimer
from sip_train.problems.base import InverseProblem, Observed


class TrainingLog:
    """Writes one row of training metrics at a log step (`global_step % log_every_n_steps == 0`): the rule's
    objective (train/objective), the problem's metrics, the rule's stats and the latest step time.

    `LightningModule.log` would cost about half a small problem's update per value (Lightning copies and
    reduces each one); here the tensors of the row are read from the device in one transfer, and only on log
    steps, so the other steps never wait for the device. A stat that is not a tensor (e.g. a time measured
    by CUDA events) is read with `float()` at that moment.
    """

    def __init__(self, trainer: Trainer, problem: InverseProblem) -> None:
        self.trainer, self.problem = trainer, problem
        self.step_timer = next((c for c in trainer.callbacks if isinstance(c, StepTimer)), None)

    def due(self) -> bool:
        """Whether the current global step is a log step (on the process that writes the logs)."""
        return self.trainer.global_step % self.trainer.log_every_n_steps == 0 and self.trainer.is_global_zero

    def write(self, result: dict, x_true: torch.Tensor | None, y_target: torch.Tensor, observed: Observed = ()) -> None:
        """Write the row of an update's `result` (loss, x, y, optional stats) at the current global step."""
        values = {"train/objective": result["loss"],  # what the rule minimises (its own quantity)
                  **{f"train/{name}": value.mean()
                     for name, value in self.problem.metrics(result["x"], x_true, result["y"], y_target,
                                                              *observed).items()},
                  **{f"train/{name}": value for name, value in result.get("stats", {}).items()}}
        tensors = {name: value for name, value in values.items() if isinstance(value, torch.Tensor)}
        row = dict(zip(tensors, torch.stack([v.detach().float().reshape(()) for v in tensors.values()]).tolist()))
        row.update({name: float(value) for name, value in values.items() if name not in tensors})
        row = {name: row[name] for name in values}  # the columns in their order
        if self.step_timer is not None and self.step_timer.step_times_ms:
            row["time/step_ms"] = self.step_timer.step_times_ms[-1]  # the latest step, per update
        step = self.trainer.global_step
        for logger in self.trainer.loggers:
            logger.log_metrics(row, step=step)
            logger.save()  # as Lightning does: a row on disk survives a killed run
