"""The one LightningModule: a problem, a network and an update rule, trained by manual optimisation. It holds
the training and validation steps and is the rules' `StepInterface`; building, the fast path, compilation,
the training log and the validation figures are modules of their own."""
from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule
from omegaconf import OmegaConf

from sip_train import lightning_internals, values
from sip_train.compiled import CompiledUpdate, compile_options, compile_parts, compile_update
from sip_train.components import build_components, plain_block
from sip_train.fast_path import DirectStep, use_fast_path
from sip_train.physics_precision import PhysicsPrecision
from sip_train.problems.base import Batch
from sip_train.training_log import TrainingLog
from sip_train.validation_figures import ValidationFigures, method_name

__all__ = ["InverseProblemModule", "build_components"]


def updates_in_step(step: int, updates_per_step: int, val_every: int | None, max_steps: int) -> int:
    """How many updates a training step starting at global step `step` makes: `updates_per_step`, fewer where
    that would pass a validation step (every `val_every` steps) or max_steps (<= 0: none), so each stays where
    it was; log steps are written by the update that reaches them (see `InverseProblemModule.update`)."""
    end = step + updates_per_step
    if val_every is not None and val_every > 0:
        end = min(end, (step // val_every + 1) * val_every)
    if max_steps > 0:
        end = min(end, max_steps)
    return max(end - step, 1)


class InverseProblemModule(LightningModule):
    """Trains a network x = NN(y*) on one inverse problem with one update rule; it is the
    rules' `StepInterface` (predict, manual_backward, optimizer).

    Constructed from the `problem`, `optimizer` and `network` config blocks (nodes of the composed
    config, or plain dicts); they are saved resolved as hyper-parameters, so
    `InverseProblemModule.load_from_checkpoint(path)` rebuilds it.
    """

    def __init__(self, problem: dict, optimizer: dict, network: dict, seed: int = 0, figure_examples: int = 3,
                 compile: bool | dict = False, updates_per_step: int = 1) -> None:
        super().__init__()
        self.updates_per_step = values.integer("updates_per_step", updates_per_step)
        self.compile_options = compile_options(compile)
        blocks = {"problem": plain_block(problem), "optimizer": plain_block(optimizer), "network": plain_block(network)}
        self.save_hyperparameters({**{k: OmegaConf.to_container(v) for k, v in blocks.items()},
                                   "seed": seed, "figure_examples": figure_examples,
                                   "compile": compile if isinstance(compile, bool) else self.compile_options,
                                   "updates_per_step": updates_per_step})
        self.problem, self.network, self.rule = build_components(blocks["problem"], blocks["optimizer"], blocks["network"], seed)
        self._compile_whole = self.compile_options is not None and compile_parts(
            self.problem, self.network, self.rule, self.compile_options)
        self.automatic_optimization = False
        self.figure_examples = figure_examples
        self.last_validated_step = -1
        self.training_log: TrainingLog | None = None  # see setup
        self._direct = False  # see on_train_start
        self._compiled_update: CompiledUpdate | None = None  # see on_train_start
        self._precision: PhysicsPrecision | None = None  # see setup
        self._figures = ValidationFigures(figure_examples, method_name(self.hparams)) if figure_examples > 0 else None
        self._reference_metrics: dict[int, dict[str, torch.Tensor]] = {}

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        """The solution estimate x = NN(y*), with the problem's invariants applied."""
        network_input = self.problem.network_input(y_target)
        if self._precision is not None and self._precision.active:
            with self._precision.network():
                raw = self.network(network_input)
            raw = self._precision.full(raw)
        else:
            raw = self.network(network_input)
        return self.problem.prepare_prediction(raw, y_target)

    forward = predict

    def optimizer(self) -> torch.optim.Optimizer:
        """The rule's optimizer, wrapped by Lightning so that stepping it advances the global step."""
        optimizer = self.optimizers()
        return DirectStep(optimizer) if self._direct else optimizer

    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        """Back-propagate `loss` (through Lightning's strategy and precision plugin off the fast path)."""
        if self._direct:
            loss.backward(*args, **kwargs)
        else:
            super().manual_backward(loss, *args, **kwargs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.rule.make_optimizer(self.network.parameters())

    def configure_callbacks(self) -> list[Callback]:
        """The validation figures, once (fit and validate both ask)."""
        if self._figures is None or any(callback is self._figures for callback in self.trainer.callbacks):
            return []
        return [self._figures]

    def setup(self, stage: str) -> None:
        self._precision = PhysicsPrecision(self.trainer, self.problem)
        self.training_log = TrainingLog(self.trainer, self.problem)

    def on_train_start(self) -> None:
        lightning_internals.require(self.trainer, self.optimizers())
        self._direct = use_fast_path(self.trainer, self)
        if self._compile_whole:
            self._compiled_update = compile_update(self, self.rule, self.optimizers().optimizer, self.compile_options,
                                                   self.device, self._direct)

    def updates_from(self, step: int) -> int:
        """How many updates the training step starting at global step `step` makes (`updates_in_step`)."""
        every = self.trainer.val_check_interval
        return updates_in_step(step, self.updates_per_step, every if isinstance(every, int) else None,
                               self.trainer.max_steps)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """`updates_from(global_step)` updates, each one optimizer step, i.e. one global step, on the batch of
        its own global step: small problems pay Lightning's fixed cost per step once per several updates.
        Returns the last update's result with the loss of each update."""
        first = self.global_step
        updates = self.updates_from(first)
        # The data module makes the batch after Lightning converted its input (a step number): convert it here.
        convert = self.trainer.precision_plugin.convert_input
        result = self.update(*convert(batch))
        if updates == 1:
            return result
        losses = [result["loss"]]  # only the losses are kept: earlier predictions would hold their memory
        data, device, rank = self.trainer.datamodule, self.device, self.global_rank
        for step in range(first + 1, first + updates):
            result = self.update(*convert(data.train_batch(step, device, rank)))
            losses.append(result["loss"])
        lightning_internals.count_as_batches(self.trainer, updates - 1)
        return {**result, "loss": torch.stack(losses)}

    def update(self, x_true: torch.Tensor | None, y_target: torch.Tensor, *observed: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """One update by the rule on a batch (x*, y*, *observed) (the compiled whole update under compile=true);
        the update that reaches a log step writes the training metrics."""
        with self._precision.physics():
            if self._compiled_update is None:
                result = self.rule.training_step(self, y_target, *observed)
            else:
                with lightning_internals.counted_step(self.optimizers()):
                    result = self._compiled_update(y_target, *observed)
            if self.training_log.due():
                self.training_log.write(result, x_true, y_target, observed)
        return result

    def validation_step(self, batch: Batch, batch_idx: int) -> dict:
        """Validation metrics of one batch (x*, y*, *observed) and the fixed reference baselines (computed once);
        returns the figure's arguments (x, x*, y, y*, *observed)."""
        x_true, y_target, *observed = self.trainer.precision_plugin.convert_input(batch)
        x = self.predict(y_target)
        with self._precision.physics():
            y = self.problem.simulate(x, *observed)
            metrics = self.problem.metrics(x, x_true, y, y_target, *observed)
            if batch_idx not in self._reference_metrics:  # the validation set is fixed: compute baselines once
                self._reference_metrics[batch_idx] = self.problem.reference_metrics(x_true, y_target, *observed)
        for name, value in {**metrics, **self._reference_metrics[batch_idx]}.items():
            self.log(f"val/{name}", value.mean(), batch_size=len(value), sync_dist=True,
                     prog_bar=name == self.problem.primary_metric)
        self.log("step", float(self.global_step), batch_size=len(x), sync_dist=True)
        return {"figure": (x, x_true, y, y_target, *observed)}

    def on_validation_epoch_end(self) -> None:
        self.last_validated_step = self.global_step
