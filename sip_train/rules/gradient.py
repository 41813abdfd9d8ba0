"""Plain training: back-propagate the physics loss L(NN(y*)) through the simulator."""
from __future__ import annotations

import torch

from sip_train.problems.base import InverseProblem
from sip_train.rules.base import UpdateRule


class PhysicsGradient(UpdateRule):
    """Minimise the physics loss end to end with any torch optimizer (SGD, Adam, RMSprop, ...)."""

    def objective(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y = problem.simulate(x, *observed)
        return problem.y_loss(y, y_target), y.detach()
