"""Poisson's equation (paper appendix B.2): find the source x of a potential y with lap(y) = x."""
from __future__ import annotations

import torch

from sip_train.physics import poisson
from sip_train.physics.noise import smooth_noise
from sip_train.problems.base import GridProblem

SOLVERS = ("spectral", "cg")


class Poisson(GridProblem):
    """P(x) = lap^-1(x) with zero boundaries; SIP update dx = -lap(y - y*) (the analytic inverse).

    x* is smooth random noise (PhiFlow `Noise(scale, smoothness)`), y* = P(x*).
    """

    def __init__(
        self,
        resolution: int = 64,
        solver: str = "spectral",
        cg_rel_tol: float = 1e-5,
        noise_scale: float = 10.0,
        noise_smoothness: float = 1.0,
        batch_reduction: str = "sum",
    ) -> None:
        super().__init__(resolution, batch_reduction)
        if solver not in SOLVERS:
            raise ValueError(f"problem.solver={solver!r} is invalid: choose one of {list(SOLVERS)}")
        self.solver = solver
        self.cg_rel_tol = cg_rel_tol
        self.noise_scale = noise_scale
        self.noise_smoothness = noise_smoothness

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x_true = smooth_noise(
            n, (self.resolution, self.resolution), generator, self.noise_scale, self.noise_smoothness
        ).unsqueeze(1)
        return x_true, self.simulate(x_true)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        if self.solver == "cg":
            return poisson.solve_cg(x, self.cg_rel_tol)
        return poisson.solve_spectral(x)

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return -poisson.laplace(y - y_target)
