"""The figure of each validation: a few examples drawn by the problem, titled with the method, the step and
the validation error, saved under <run dir>/figures and sent to W&B."""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger
from matplotlib.figure import Figure

from sip_train import plots
from sip_train.problems.base import Batch, batch_rows

#: W&B's key of the validation figures.
WANDB_KEY = "val/examples"
_FILE = re.compile(r"val_step(\d{7})\.png")


def method_name(hparams: dict) -> str:
    """"problem/optimizer" of a run: the config options when run through Hydra, else the classes' names."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def option(group: str) -> str:
        choice = choices.get(group)
        return choice if isinstance(choice, str) else hparams[group]["_target_"].rsplit(".", 1)[-1].lower()

    return f"{option('problem')}/{option('optimizer')}"


def save_validation_figure(figure: Figure, run_dir: str | Path, step: int, method: str, inverse: str | None,
                           metric: str, error: float | None) -> Path:
    """Title `figure` with the method (and its inverse solver), the step and the validation error, save it as
    <run_dir>/figures/val_step<step>.png and free it; returns the file (the image W&B gets too)."""
    title = method + (f" ({inverse})" if inverse else "") + f", step {step}"
    plots.add_title(figure, title + (f", val {metric} = {error:.4g}" if error is not None else ""))
    path = Path(run_dir) / "figures" / f"val_step{step:07d}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def saved_validation_figures(run_dir: str | Path) -> dict[int, Path]:
    """step -> the validation figure a run saved at that step."""
    found = ((_FILE.fullmatch(path.name), path) for path in (Path(run_dir) / "figures").glob("val_step*.png"))
    return {int(match.group(1)): path for match, path in found if match}


class ValidationFigures(Callback):
    """Draws the first `examples` validation examples of each validation with `problem.figure`, on rank 0.

    Takes (x, x*, y, y*, *observed) from what the module's `validation_step` returns for the first batch; the title is
    written at the end of the validation, when the validation metrics are reduced over batches and ranks.
    """

    def __init__(self, examples: int, method: str) -> None:
        self.examples, self.method = examples, method
        self._batch: Batch | None = None

    def on_validation_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        if batch_idx == 0 and outputs is not None:
            self._batch = batch_rows(outputs["figure"], slice(self.examples))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or self._batch is None:
            return
        problem = pl_module.problem
        figure = problem.figure(*self._batch)
        self._batch = None
        error = trainer.callback_metrics.get(f"val/{problem.primary_metric}")
        path = save_validation_figure(figure, trainer.default_root_dir, trainer.global_step, self.method,
                                      getattr(getattr(pl_module.rule, "inverse", None), "name", None),
                                      problem.primary_metric, None if error is None else float(error))
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):  # the saved file: no second drawing of the figure
                logger.log_image(WANDB_KEY, [str(path)], step=trainer.global_step)
