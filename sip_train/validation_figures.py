"""The figure of each validation: a few examples drawn by the problem, titled with the method, the step and
the validation error, saved under <run dir>/figures and sent to W&B."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from sip_train import plots
from sip_train.problems.base import Batch, batch_rows


def method_name(hparams: dict) -> str:
    """"problem/optimizer" of a run: the config options when run through Hydra, else the classes' names."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def option(group: str) -> str:
        choice = choices.get(group)
        return choice if isinstance(choice, str) else hparams[group]["_target_"].rsplit(".", 1)[-1].lower()

    return f"{option('problem')}/{option('optimizer')}"


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
        name = problem.primary_metric
        error = trainer.callback_metrics.get(f"val/{name}")
        inverse = getattr(getattr(pl_module.rule, "inverse", None), "name", None)
        title = self.method + (f" ({inverse})" if inverse else "") + f", step {trainer.global_step}"
        plots.add_title(figure, title + (f", val {name} = {float(error):.4g}" if error is not None else ""))
        directory = Path(trainer.default_root_dir) / "figures"
        directory.mkdir(parents=True, exist_ok=True)
        figure.savefig(directory / f"val_step{trainer.global_step:07d}.png", dpi=80)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/examples", [figure], step=trainer.global_step)
        plt.close(figure)
