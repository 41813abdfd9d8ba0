"""The vectorised update of an ensemble: K networks by vmap, the members' examples folded into one batch for
the physics and the rule's objective, one backward of the summed member objectives, per-member optimizers."""
from __future__ import annotations

import torch

from sip_train.ensemble.network import StackedNetwork
from sip_train.ensemble.optimizers import member_group, stacked_optimizer_class
from sip_train.ensemble.problem import FoldedProblem
from sip_train.problems.base import InverseProblem
from sip_train.rules.base import UpdateRule


class EnsembleUpdate:
    """K members of one rule on one problem class, stepped together.

    Args:
        problems: each member's problem (members with equal problem settings share one instance).
        networks: each member's freshly built network (same architecture).
        rules: each member's rule; they differ at most in their optimizer's hyper-parameters, so the
            first one computes the objective for all.
        device: where the ensemble trains.
    """

    def __init__(self, problems: list[InverseProblem], networks: list[torch.nn.Module], rules: list[UpdateRule],
                 device: torch.device) -> None:
        self.device = device
        self.problem = FoldedProblem([problem.to(device) for problem in problems])
        self.network = StackedNetwork([network.to(device) for network in networks])
        self.rule = rules[0]
        optimizers = [rule.make_optimizer(network.parameters()) for rule, network in zip(rules, networks)]
        stacked = stacked_optimizer_class(optimizers[0])
        if stacked is None or any(type(o) is not type(optimizers[0]) for o in optimizers):
            raise ValueError(f"no ensemble version of optimizer {type(optimizers[0]).__name__}")
        self.optimizer = stacked(self.network.params, [member_group(o) for o in optimizers])
        self.first_bad_step = torch.full((len(problems),), -1, dtype=torch.long, device=device)

    @property
    def members(self) -> int:
        return self.problem.members

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        """x = NN_k(y*) for the folded batch (K * B examples, member k's network on its rows)."""
        inputs = self.problem.network_input(y_target)
        outputs = self.network(inputs.view(self.members, -1, *inputs.shape[1:]))
        return self.problem.prepare_prediction(outputs.reshape(len(inputs), *outputs.shape[2:]), y_target)

    def update(self, step: int, y_target: torch.Tensor, *observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update of every member on its rows of the folded batch (y*, *observed), as
        `UpdateRule.training_step` makes it alone; `step` is the global step it completes (for the divergence
        record, kept on the device).
        Returns the members' objectives (K,), per-example objectives, prediction x and simulated y (detached)."""
        x = self.predict(y_target)
        per_example, y = self.rule.objective(self.problem, x, y_target, *observed)
        losses = self.problem.member_losses(per_example)
        self.optimizer.zero_grad()
        losses.sum().backward()
        self.optimizer.step()
        x = x.detach()
        bad = ~(torch.isfinite(losses) & torch.isfinite(x.view(self.members, -1)).all(1))
        self.first_bad_step = torch.where((self.first_bad_step < 0) & bad, step, self.first_bad_step)
        return {"losses": losses.detach(), "per_example": per_example.detach(), "x": x, "y": y}

    def parameters_finite(self) -> torch.Tensor:
        """Whether each member's parameters are all finite (K,), on the device."""
        return torch.stack([torch.isfinite(p.detach().flatten(1)).all(1) for p in self.network.params.values()]).all(0)

    def select(self, keep: list[int], problems: list[InverseProblem]) -> None:
        """Continue with the members `keep` only (their indices, in order); `problems` are theirs."""
        index = torch.tensor(keep, device=self.device)
        self.network.select(index)
        self.optimizer.select(index, self.network.params)
        self.first_bad_step = self.first_bad_step[index]
        self.problem = FoldedProblem(problems)
