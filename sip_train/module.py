"""The one LightningModule: a problem, a network and an update rule, trained by manual optimisation."""
from __future__ import annotations

import logging
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra.utils import instantiate
from lightning.pytorch import LightningModule
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from omegaconf import DictConfig, OmegaConf

from sip_train import plots
from sip_train.callbacks import StepTimer
from sip_train.compiled import (CompiledUpdate, compile_components, compile_options, differentiates_physics_twice,
                                update_compile_options)
from sip_train.problems.base import Batch, InverseProblem, Observed, batch_rows
from sip_train.rules.base import UpdateRule
from sip_train.rules.hessian_free import HessianFreeRule

log = logging.getLogger(__name__)

def build_components(
    problem: DictConfig, optimizer: DictConfig, network: DictConfig, seed: int
) -> tuple[InverseProblem, torch.nn.Module, UpdateRule]:
    """Instantiate problem, update rule and network from their config blocks.

    The network is built right after seeding, so one seed gives the same initial weights
    whatever the update rule: methods are compared from the same start.
    """
    problem_obj: InverseProblem = instantiate(problem)
    rule: UpdateRule = instantiate(optimizer)
    torch.manual_seed(seed)
    network_obj = instantiate(network, in_shape=problem_obj.y_shape, out_shape=problem_obj.x_shape)
    rule.check(problem_obj, network_obj)
    return problem_obj, network_obj, rule


class _DirectStep:
    """A LightningOptimizer stepped without the strategy and precision plugin, but counted as a global step."""

    def __init__(self, optimizer: LightningOptimizer) -> None:
        self.wrapped = optimizer

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)

    def step(self, closure=None, **kwargs):
        self.wrapped._on_before_step()
        output = self.wrapped.optimizer.step(closure, **kwargs)
        self.wrapped._on_after_step()
        return output


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
        if isinstance(updates_per_step, bool) or not isinstance(updates_per_step, int) or updates_per_step < 1:
            raise ValueError(f"updates_per_step={updates_per_step!r} is invalid: must be a positive integer")
        self.compile_options = compile_options(compile)
        # Resolve each block where it stands in the full config (network blocks read network_defaults)
        # and keep plain copies: the hyper-parameters must not depend on the rest of the config.
        blocks = {name: OmegaConf.create(OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig)
                                         else block)
                  for name, block in (("problem", problem), ("optimizer", optimizer), ("network", network))}
        self.save_hyperparameters({**{k: OmegaConf.to_container(v) for k, v in blocks.items()},
                                   "seed": seed, "figure_examples": figure_examples,
                                   "compile": compile if isinstance(compile, bool) else self.compile_options,
                                   "updates_per_step": updates_per_step})
        self.problem, self.network, self.rule = build_components(blocks["problem"], blocks["optimizer"], blocks["network"], seed)
        self._compile_whole = self.compile_options is not None and self._compile_parts()
        self.automatic_optimization = False
        self.updates_per_step = updates_per_step
        self._direct = False  # see on_train_start
        self._step_timer: StepTimer | None = None  # see on_train_start
        self._compiled_update: CompiledUpdate | None = None  # see on_train_start
        self.figure_examples = figure_examples
        self.last_validated_step = -1
        self._figure_batch: Batch | None = None  # (x, x*, y, y*, *observed), the arguments of `problem.figure`
        self._reference_metrics: dict[int, dict[str, torch.Tensor]] = {}

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        """The solution estimate x = NN(y*), with the problem's invariants applied."""
        return self.problem.prepare_prediction(self.network(self.problem.network_input(y_target)), y_target)

    forward = predict

    def optimizer(self) -> torch.optim.Optimizer:
        """The rule's optimizer, wrapped by Lightning so that stepping it advances the global step."""
        optimizer = self.optimizers()
        return _DirectStep(optimizer) if self._direct else optimizer

    def manual_backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        """Back-propagate `loss` (through Lightning's strategy and precision plugin unless they would only
        call `loss.backward`)."""
        if self._direct:
            loss.backward(*args, **kwargs)
        else:
            super().manual_backward(loss, *args, **kwargs)

    def on_train_start(self) -> None:
        # In 32-bit precision on one device Lightning's backward and optimizer step add only hooks that no
        # callback here uses; small problems skip them (per update they cost as much as the update itself).
        self._direct = (type(self.trainer.strategy) is SingleDeviceStrategy
                        and type(self.trainer.precision_plugin) is Precision)
        self._step_timer = next((c for c in self.trainer.callbacks if isinstance(c, StepTimer)), None)
        if self._compile_whole:
            self._compile_update()

    def _compile_parts(self) -> bool:
        """compile=true at construction: compile what torch.compile supports for this rule (the network and the
        physics, the network only, or nothing), saying so in one line unless the whole update may be compiled
        at the start of training (returns whether it may)."""
        rule = type(self.rule).__name__
        if self.rule.create_graph or isinstance(self.rule, HessianFreeRule):
            log.info("compile: %s back-propagates through a gradient, which torch.compile does not support; "
                     "it runs eager", rule)
            return False
        if differentiates_physics_twice(self.rule, self.problem):
            compile_components(self.problem, self.network, self.compile_options, physics=False)
            log.info("compile: %s's Gauss-Newton inverse differentiates the physics twice, which torch.compile does "
                     "not support; compiled the network only", rule)
            return False
        compile_components(self.problem, self.network, self.compile_options)
        if not self.rule.updates_by_loss:
            log.info("compile: %s updates by its own training step; compiled the network and the physics only", rule)
            return False
        return True

    def _compile_update(self) -> None:
        """compile=true at the start of training: compile the whole update where the optimizer is stepped directly
        (one device, 32-bit), else keep the network and the physics compiled; say which in one line."""
        options = update_compile_options(self.compile_options, self.device)
        rule = type(self.rule).__name__
        if not self._direct:
            log.info("compile: Lightning's strategy or precision plugin steps the optimizer here; compiled the "
                     "network and the physics only")
        else:
            self._compiled_update = CompiledUpdate(self, self.rule, self.optimizers().optimizer, options)
            log.info("compile: the whole %s update (network, physics, objective, backward, optimizer step), "
                     "torch.compile %s", rule, options or "defaults")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.rule.make_optimizer(self.network.parameters())

    def updates_from(self, step: int) -> int:
        """How many updates the training step starting at global step `step` makes: `updates_per_step`, fewer
        where that would pass a validation step or max_steps (so each stays where it was; log steps are
        written by the update that reaches them, see `_update`)."""
        trainer = self.trainer
        end = step + self.updates_per_step
        every = trainer.val_check_interval
        if isinstance(every, int) and every > 0:
            end = min(end, (step // every + 1) * every)
        if trainer.max_steps > 0:
            end = min(end, trainer.max_steps)
        return max(end - step, 1)

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """`updates_from(global_step)` updates, each one optimizer step, i.e. one global step, on the batch of
        its own global step: small problems pay Lightning's fixed cost per step once per several updates.
        Returns the last update's result with the loss of each update."""
        first = self.global_step
        updates = self.updates_from(first)
        result = self._update(*batch)
        if updates == 1:
            return result
        losses = [result["loss"]]  # only the losses are kept: earlier predictions would hold their memory
        data, device, rank = self.trainer.datamodule, self.device, self.global_rank
        for step in range(first + 1, first + updates):
            result = self._update(*data.train_batch(step, device, rank))
            losses.append(result["loss"])
        self._count_as_batches(updates - 1)
        return {**result, "loss": torch.stack(losses)}

    def _compiled_step(self, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The compiled whole update, counted as one optimizer step (a global step) like `_DirectStep.step`."""
        optimizer = self.optimizers()
        optimizer._on_before_step()
        result = self._compiled_update(y_target)
        optimizer._on_after_step()
        return result

    def _count_as_batches(self, extra: int) -> None:
        """Lightning schedules logging and validation by batches: count each extra update of a step as a
        batch, so that those schedules, and the counters saved in checkpoints, stay in updates."""
        loop = self.trainer.fit_loop.epoch_loop
        for counter in (loop.batch_progress.total, loop.batch_progress.current):
            counter.ready += extra
            counter.started += extra
            counter.processed += extra
            counter.completed += extra
        loop._batches_that_stepped += extra

    def _update(self, x_true: torch.Tensor | None, y_target: torch.Tensor, *observed: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """One update by the rule on a batch (x*, y*, *observed); the update that reaches a log step writes
        the training metrics."""
        result = (self.rule.training_step(self, y_target, *observed) if self._compiled_update is None
                  else self._compiled_step(y_target))
        if self.global_step % self.trainer.log_every_n_steps == 0 and self.trainer.is_global_zero:
            self._log_training(result, x_true, y_target, observed)
        return result

    def _log_training(self, result: dict[str, torch.Tensor], x_true: torch.Tensor | None, y_target: torch.Tensor,
                      observed: Observed) -> None:
        """Write one row of training metrics at the current global step straight to the loggers.

        `self.log` would cost about half a small problem's update per value (Lightning copies and reduces
        each one); the row is read from the device in one transfer, and only on log steps, so the other
        steps never wait for the device.
        """
        values = {"train/objective": result["loss"],  # what the rule minimises (its own quantity)
                  **{f"train/{name}": value.mean()
                     for name, value in self.problem.metrics(result["x"], x_true, result["y"], y_target,
                                                             *observed).items()},
                  **{f"train/{name}": value for name, value in result.get("stats", {}).items()}}
        row = dict(zip(values, torch.stack([v.detach().float().reshape(()) for v in values.values()]).tolist()))
        if self._step_timer is not None and self._step_timer.step_times_ms:
            row["time/step_ms"] = self._step_timer.step_times_ms[-1]  # the latest step, per update
        for logger in self.loggers:
            logger.log_metrics(row, step=self.global_step)
            logger.save()  # as Lightning does: a row on disk survives a killed run

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        x_true, y_target, *observed = batch
        x = self.predict(y_target)
        y = self.problem.simulate(x, *observed)
        metrics = self.problem.metrics(x, x_true, y, y_target, *observed)
        if batch_idx not in self._reference_metrics:  # the validation set is fixed: compute baselines once
            self._reference_metrics[batch_idx] = self.problem.reference_metrics(x_true, y_target, *observed)
        for name, value in {**metrics, **self._reference_metrics[batch_idx]}.items():
            self.log(f"val/{name}", value.mean(), batch_size=len(value), sync_dist=True,
                     prog_bar=name == self.problem.primary_metric)
        self.log("step", float(self.global_step), batch_size=len(x), sync_dist=True)
        if batch_idx == 0:
            self._figure_batch = batch_rows((x, x_true, y, y_target, *observed), slice(self.figure_examples))

    def on_validation_epoch_end(self) -> None:
        self.last_validated_step = self.global_step

    def on_validation_end(self) -> None:
        # Here, unlike at epoch end, the validation metrics are reduced (over batches and ranks) for the title.
        if self.trainer.sanity_checking or not self.trainer.is_global_zero or self._figure_batch is None:
            return
        if self.figure_examples > 0:
            self.log_figure(self.problem.figure(*self._figure_batch))

    def log_figure(self, figure: plt.Figure) -> None:
        """Title a validation figure with the step and the validation error, save it under <run dir>/figures
        and send it to W&B (at the step it shows) if W&B is on."""
        name = self.problem.primary_metric
        error = self.trainer.callback_metrics.get(f"val/{name}")
        plots.add_title(figure, f"step {self.global_step}" + (f", val {name} = {float(error):.4g}" if error is not None
                                                              else ""))
        directory = Path(self.trainer.default_root_dir) / "figures"
        directory.mkdir(parents=True, exist_ok=True)
        figure.savefig(directory / f"val_step{self.global_step:07d}.png", dpi=80)
        for logger in self.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("val/examples", [figure], step=self.global_step)
        plt.close(figure)
