"""Progress of a run in the terminal, counted in optimisation steps (the data is infinite, so epochs mean
nothing): a bar on a terminal, one plain line every few steps when the output goes to a file. Both show
host values only (the latest validation as `LatestValidation` read it, the StepTimer's last interval):
showing progress never waits for the device."""
from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf

from sip_train.callbacks import LatestValidation, StepTimer

LINES_PER_RUN = 20  # plain-line mode: about this many lines over max_steps


def step_metrics(trainer: Trainer, primary_metric: str) -> dict[str, str]:
    """What the progress shows beside the steps: the latest validation error and the last step time."""
    shown = {}
    validated = [c.metrics[primary_metric] for c in trainer.callbacks
                 if isinstance(c, LatestValidation) and primary_metric in c.metrics]
    if validated:
        shown[f"val {primary_metric}"] = f"{validated[-1]:.4g}"
    times = [ms for callback in trainer.callbacks if isinstance(callback, StepTimer) for ms in callback.step_times_ms]
    if times:
        shown["step time"] = f"{times[-1]:.0f} ms"
    return shown


def _primary_metric(pl_module: LightningModule) -> str:
    return getattr(getattr(pl_module, "problem", None), "primary_metric", "x_l1")


class StepProgressBar(TQDMProgressBar):
    """A bar over steps done / max_steps (continuing from the checkpoint's step after a resume), with the
    validation error and the step time."""

    @property
    def total_train_batches(self) -> int | float:
        return self.trainer.max_steps if self.trainer.max_steps > 0 else float("inf")

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        return step_metrics(trainer, _primary_metric(pl_module))

    def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        bar = self.train_progress_bar  # (not tqdm's reset: it would show 0 steps done once, even after a resume)
        bar.total = convert_inf(self.total_train_batches)
        bar.n = bar.last_print_n = bar.initial = trainer.global_step
        bar.start_t = bar.last_print_t = bar._time()
        bar.set_description("steps")

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        done = trainer.global_step
        if self._should_update(done, self.train_progress_bar.total):
            self.train_progress_bar.n = done
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=True)


class StepLines(ProgressBar):
    """Progress as one plain line every `every_n_steps` steps (and at the last), for output to a file or a
    batch system's log, where a bar would write its whole state at every refresh. A step's line is printed
    once its validation (if it has one) is done, so it shows that validation."""

    def __init__(self, every_n_steps: int | None = None) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps
        self._enabled = True
        self._steps_before = 0
        self._pending: tuple[str, str] | None = None  # (steps, primary metric) of a line whose validation may come

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.every_n_steps is None:
            self.every_n_steps = max(1, trainer.max_steps // LINES_PER_RUN) if trainer.max_steps > 0 else 50

    def _flush(self, trainer: Trainer) -> None:
        if self._pending is not None:
            shown = step_metrics(trainer, self._pending[1])
            print("  ".join([self._pending[0], *(f"{key} {value}" for key, value in shown.items())]), flush=True)
            self._pending = None

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._flush(trainer)
        self._steps_before = trainer.global_step

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        # a Lightning step may make several updates (InverseProblemModule.updates_per_step): a line whenever
        # its updates reached a multiple of every_n_steps
        done, total, every = trainer.global_step, trainer.max_steps, self.every_n_steps
        if self._enabled and trainer.is_global_zero and (done // every > self._steps_before // every or done == total):
            self._pending = (f"step {done}/{total}" if total > 0 else f"step {done}", _primary_metric(pl_module))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._flush(trainer)


def progress_callback(every_n_steps: int | None = None) -> ProgressBar:
    """A bar when stdout is a terminal, plain lines every few steps otherwise."""
    return StepProgressBar() if sys.stdout.isatty() else StepLines(every_n_steps)
