"""The vectorised update of an ensemble: K networks by vmap, the members' examples folded into one batch for
the physics and the rule's objective, one backward of the summed member objectives, per-member optimizers."""
from __future__ import annotations

import copy
import logging

import torch

from sip_train.compiled import LossStep, update_compile_options
from sip_train.ensemble.network import StackedNetwork
from sip_train.ensemble.optimizers import member_group, stacked_optimizer_class
from sip_train.ensemble.problem import FoldedProblem
from sip_train.problems.base import InverseProblem
from sip_train.rules.base import UpdateRule

log = logging.getLogger(__name__)


class EnsembleUpdate:
    """K members of one rule on one problem class, stepped together.

    Args:
        problems: each member's problem (members with equal problem settings share one instance).
        networks: each member's freshly built network (same architecture).
        rules: each member's rule; they differ at most in their optimizer's hyper-parameters and in the values
            the rule declares in `ensemble_parameters`, so one copy of the first computes the objective for all,
            with those values as columns over the folded batch (each member's on its rows).
        device: where the ensemble trains.
        compile: torch.compile's options for the whole update (network, physics, objective, backward,
            optimizer step), or None for eager.
    """

    def __init__(self, problems: list[InverseProblem], networks: list[torch.nn.Module], rules: list[UpdateRule],
                 device: torch.device, compile: dict | None = None) -> None:
        self.device = device
        self.problem = FoldedProblem([problem.to(device) for problem in problems])
        self.network = StackedNetwork([network.to(device) for network in networks])
        self.rule = copy.copy(rules[0])
        dtype = next(iter(self.network.params.values())).dtype
        self.member_values = {name: torch.tensor([float(getattr(rule, name)) for rule in rules], dtype=dtype,
                                                 device=device)
                              for name in type(self.rule).ensemble_parameters
                              if len({getattr(rule, name) for rule in rules}) > 1}
        self._value_rows = 0
        optimizers = [rule.make_optimizer(network.parameters()) for rule, network in zip(rules, networks)]
        stacked = stacked_optimizer_class(optimizers[0])
        if stacked is None or any(type(o) is not type(optimizers[0]) for o in optimizers):
            raise ValueError(f"no ensemble version of optimizer {type(optimizers[0]).__name__}")
        self.optimizer = stacked(self.network.params, [member_group(o) for o in optimizers])
        self.first_bad_step = torch.full((len(problems),), -1, dtype=torch.long, device=device)
        if compile is not None and self.rule.differentiates_physics_twice:
            log.info("compile: %s differentiates the physics twice, which torch.compile does not support; the "
                     "ensemble's update runs eager", type(self.rule).__name__)
            compile = None
        elif compile is not None:
            # static shapes: when diverged members leave, the smaller ensemble compiles afresh (vmap of the U-Net's
            # interpolation fails under the dynamic shapes torch would otherwise switch to)
            compile = {**update_compile_options(compile, device), "dynamic": False}
            log.info("compile: the ensemble's whole update (networks, physics, objective, backward, optimizer step), "
                     "torch.compile %s", compile or "defaults")
        self.step_function = LossStep(self._objective, self.optimizer, compile)

    @property
    def members(self) -> int:
        return self.problem.members

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        """x = NN_k(y*) for the folded batch (K * B examples, member k's network on its rows)."""
        inputs = self.problem.network_input(y_target)
        outputs = self.network(inputs.view(self.members, -1, *inputs.shape[1:]))
        return self.problem.prepare_prediction(outputs.reshape(len(inputs), *outputs.shape[2:]), y_target)

    def _objective(self, y_target: torch.Tensor, *observed: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The sum of the members' objectives (its gradient in member k's weights is member k's own), the members'
        objectives (K,), the per-example objectives, prediction x and simulated y."""
        x = self.predict(y_target)
        per_example, y = self.rule.objective(self.problem, x, y_target, *observed)
        losses = self.problem.member_losses(per_example)
        return losses.sum(), losses, per_example, x, y

    def member_rule(self, examples: int) -> UpdateRule:
        """The rule that computes the objective of `examples` folded rows: the first member's, with each member's
        own `ensemble_parameters` values as a column over its rows where the members differ in them."""
        if examples != self._value_rows:
            shape = (examples, *(1,) * len(self.problem.x_shape))
            for name, values in self.member_values.items():
                setattr(self.rule, name, values.repeat_interleave(examples // self.members).view(shape))
            self._value_rows = examples
        return self.rule

    def update(self, step: int, y_target: torch.Tensor, *observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of every member on its rows of the folded batch (y*, *observed), as
        `UpdateRule.training_step` makes it alone; `step` is the global step it completes (for the divergence
        record, kept on the device: no host synchronisation).
        Returns the members' objectives (K,), per-example objectives, prediction x and simulated y (detached)."""
        self.member_rule(len(y_target))
        _, losses, per_example, x, y = self.step_function.run(y_target, *observed)
        bad = ~(torch.isfinite(losses) & torch.isfinite(x.view(self.members, -1)).all(1))
        self.first_bad_step = torch.where((self.first_bad_step < 0) & bad, step, self.first_bad_step)
        return {"losses": losses, "per_example": per_example, "x": x, "y": y}

    def parameters_finite(self) -> torch.Tensor:
        """Whether each member's parameters are all finite (K,), on the device."""
        return torch.stack([torch.isfinite(p.detach().flatten(1)).all(1) for p in self.network.params.values()]).all(0)

    def select(self, keep: list[int], problems: list[InverseProblem]) -> None:
        """Continue with the members `keep` only (their indices, in order); `problems` are theirs."""
        index = torch.tensor(keep, device=self.device)
        self.network.select(index)
        self.optimizer.select(index, self.network.params)
        self.first_bad_step = self.first_bad_step[index]
        self.member_values = {name: values[index] for name, values in self.member_values.items()}
        self._value_rows = 0
        self.problem = FoldedProblem(problems)
