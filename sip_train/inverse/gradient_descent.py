"""Accumulated gradient descent (the paper's fluid variant of x~): k steps, rescaled to the first."""
from __future__ import annotations

import torch

from sip_train.inverse.base import InverseSolver, loss_and_gradient, positive_float, positive_int
from sip_train.inverse.cg import per_example
from sip_train.problems.base import InverseProblem


class GradientDescent(InverseSolver):
    """dx = x_k - x_0 after k steps x_{j+1} = x_j - lr dL_i/dx, rescaled per example to the length
    of the first step lr ||dL_i/dx(x_0)||: the direction of k steps at the size of one.

    Args:
        iterations: gradient steps k per SIP update (8 in the paper's variant).
        lr: step size of each gradient step (4e-2).
        rescale: rescale the accumulated step to the first step's length.
    """

    name = "gradient_descent"

    def __init__(self, iterations: int = 8, lr: float = 4e-2, rescale: bool = True) -> None:
        self.iterations = positive_int("iterations", iterations)
        self.lr = positive_float("lr", lr)
        self.rescale = rescale

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _, gradient, y = loss_and_gradient(problem, x, y_target, observed)
        first_length = torch.linalg.vector_norm(self.lr * gradient.flatten(1), dim=1)
        estimate = x.detach()
        for iteration in range(self.iterations):
            if iteration:
                _, gradient, _ = loss_and_gradient(problem, estimate, y_target, observed)
            estimate = estimate - self.lr * gradient
        step = estimate - x
        if self.rescale:
            length = torch.linalg.vector_norm(step.flatten(1), dim=1)
            step = step * per_example(first_length / length.clamp_min(torch.finfo(step.dtype).tiny), step)
        return y, step
