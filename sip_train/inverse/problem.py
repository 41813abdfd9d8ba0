"""The problem's own, hand-written inverse update U (the paper's SIP)."""
from __future__ import annotations

import torch

from sip_train.inverse.base import InverseSolver
from sip_train.problems.base import InverseProblem


class ProblemInverse(InverseSolver):
    """dx from `problem.simulate_and_update` (e.g. Poisson's -lap(y - y*), heat's damped inverse diffusion)."""

    name = "problem"

    def check(self, problem: InverseProblem) -> None:
        if not problem.has_inverse_update():
            raise ValueError(
                f"inverse=problem needs a hand-written inverse update, which problem {type(problem).__name__} does not "
                "provide; use a generic one (inverse=auto, gauss_newton, lbfgs or gradient_descent)"
            )

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return problem.simulate_and_update(x, y_target, *observed)
