"""Callbacks every run uses: step timing and a step-based progress bar."""
from __future__ import annotations

import statistics
import time

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar


class StepTimer(Callback):
    """Wall-clock time per training iteration, measured start to start of consecutive steps.

    Start-to-start intervals include data generation, the update and logging, and need no
    device synchronisation: on a GPU they settle at the true throughput. Validation and
    checkpoint time falls into a few intervals, which the median ignores.
    """

    def __init__(self) -> None:
        self.step_times_ms: list[float] = []
        self._last_start: float | None = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_start is not None:
            self.step_times_ms.append(1000 * (now - self._last_start))
            pl_module.log("time/step_ms", self.step_times_ms[-1])
        self._last_start = now

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_start = None

    @property
    def median_ms(self) -> float | None:
        """Median step time in milliseconds (None before two steps)."""
        return statistics.median(self.step_times_ms) if self.step_times_ms else None


class StepProgressBar(TQDMProgressBar):
    """A progress bar over optimisation steps (the data is infinite, so epochs mean nothing)."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self.trainer.max_steps > 0 else float("inf")

    def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.reset(self.total_train_batches)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.set_description("Training steps")
