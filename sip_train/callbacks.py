"""Callbacks every run uses: step timing, progress, divergence and preemption handling."""
from __future__ import annotations

import logging
import os
import signal
import statistics
import threading
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


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
            if (trainer.global_step + 1) % trainer.log_every_n_steps == 0:  # a step whose logs are written
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

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
        super().on_train_epoch_start(trainer)
        self.train_progress_bar.reset(self.total_train_batches)
        self.train_progress_bar.initial = trainer.global_step
        self.train_progress_bar.set_description("Training steps")


class DivergedError(RuntimeError):
    """Training produced a non-finite loss, prediction or parameter."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"training diverged at step {step}: non-finite {what}")
        self.step = step


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
        if not os.path.exists(self.last_checkpoint):
            trainer.save_checkpoint(self.last_checkpoint, weights_only=False)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        finite = torch.isfinite(outputs["loss"]).all() & torch.isfinite(outputs["x"]).all()
        unseen = self._first_bad_step < 0
        self._first_bad_step = torch.where(unseen & ~finite, trainer.global_step, self._first_bad_step)
        step = trainer.global_step
        interval = trainer.val_check_interval if isinstance(trainer.val_check_interval, int) else 1
        if step % self.check_every == 0 or step % interval == 0 or step >= trainer.max_steps > 0:
            self.check(trainer, pl_module)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and self.is_finite(pl_module):
            trainer.save_checkpoint(self.last_checkpoint, weights_only=False)  # preemption: keep every finished step

    def _state(self, pl_module: LightningModule) -> tuple[int, bool]:
        """(first step with a non-finite loss or prediction or -1, whether all parameters are finite),
        read from the device in one transfer."""
        parameters_finite = torch.stack([torch.isfinite(p).all() for p in pl_module.parameters()]).all()
        bad_step = self._first_bad_step if self._first_bad_step is not None else torch.full_like(parameters_finite, -1,
                                                                                               dtype=torch.long)
        bad_step, finite = torch.stack([bad_step.to(parameters_finite.device), parameters_finite.long()]).tolist()
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


class Preemption(Callback):
    """SIGUSR1 (SLURM's warning signal) stops training like SIGTERM does in Lightning.

    Lightning turns SIGTERM into a SIGTERMException after the current step; this adds the same
    for SIGUSR1 unless Lightning's SLURM auto-requeue already handles it. `DivergenceGuard`
    then checkpoints the finished steps and `train` records the run as interrupted.
    """

    def __init__(self) -> None:
        self._received = False
        self._previous: object = None

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        environment = trainer._accelerator_connector.cluster_environment
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            return
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGUSR1, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        log.warning("received signal %d: saving a checkpoint and stopping after this step", signum)
        self._received = True

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._received:
            raise SIGTERMException

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
            self._previous = None
