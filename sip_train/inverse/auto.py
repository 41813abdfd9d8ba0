"""The default inverse: the problem's hand-written one where it exists, else Gauss-Newton."""
from __future__ import annotations

import torch

from sip_train.inverse.base import InverseSolver
from sip_train.inverse.gauss_newton import GaussNewton
from sip_train.inverse.problem import ProblemInverse
from sip_train.problems.base import InverseProblem


class Auto(InverseSolver):
    """`inverse=problem` for problems that provide a SIP update (`has_inverse_update`), `inverse=gauss_newton`
    (with these settings, see GaussNewton) for the others.

    Once it has checked a problem, its declarations are those of the solver it picked for it, and its
    `name` says which (e.g. "auto: gauss_newton"); before, those of the generic solver.
    """

    def __init__(self, **gauss_newton: object) -> None:
        self.own = ProblemInverse()
        self.generic = GaussNewton(**gauss_newton)
        self.chosen: InverseSolver = self.generic

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"auto: {self.chosen.name}"

    @property
    def differentiates_physics_twice(self) -> bool:  # type: ignore[override]
        return self.chosen.differentiates_physics_twice

    @property
    def vectorizable(self) -> bool:  # type: ignore[override]
        return self.chosen.vectorizable

    def choose(self, problem: InverseProblem) -> InverseSolver:
        """The solver used for `problem`."""
        return self.own if problem.has_inverse_update() else self.generic

    def check(self, problem: InverseProblem) -> None:
        self.chosen = self.choose(problem)
        self.chosen.check(problem)

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choose(problem).simulate_and_update(problem, x, y_target, *observed)
