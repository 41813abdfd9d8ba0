"""The 2D sine characterisation problem (paper appendix B.1): scale invariance in xi.

P(x) = (sin(u_1), u_2) with u = diag(gamma / xi, gamma * xi) R_phi x. Every target in
[-1, 1]^2 has a countable set of solutions; the relevant one is the solution nearest to the
prediction, so metrics measure the distance to it, relative to xi (the solution set grows
linearly with xi).
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from sip_train.physics import sine
from sip_train.problems.base import InverseProblem


class Sine(InverseProblem):
    """Find x in R^2 with P(x) = y*, y* ~ U[-1, 1]^2; SIP update: saddle-free Newton.

    Args:
        xi: conditioning factor (1 to 100 in the paper).
        phi: coupling angle in degrees (0 to 45 in the paper; 45 couples both components).
        gamma: global scale (10, the best value for Adam).
        loss_change_limit: c of the saddle-free Newton step: along directions of low or
            negative curvature the step changes the loss by about c at most (0.2).
        batch_reduction: "mean" as the authors' script.
    """

    x_shape = (2,)
    y_shape = (2,)
    ensemble_parameters = ("xi", "phi", "gamma")  # scalars an ensemble's members may differ in

    def __init__(
        self,
        xi: float = 10.0,
        phi: float = 45.0,
        gamma: float = 10.0,
        loss_change_limit: float | None = 0.2,
        batch_reduction: str = "mean",
    ) -> None:
        super().__init__(batch_reduction)
        if not xi > 0:
            raise ValueError(f"problem.xi={xi!r} is invalid: must be a positive number")
        if loss_change_limit is not None and not loss_change_limit > 0:
            raise ValueError(f"problem.loss_change_limit={loss_change_limit!r} is invalid: must be positive or null")
        self.xi = float(xi)
        self.phi = float(phi)
        self.gamma = float(gamma)
        self.loss_change_limit = loss_change_limit

    @property
    def physics(self) -> dict[str, float]:
        """The map's parameters as `sip_train.physics.sine` takes them (phi in radians)."""
        return {"xi": self.xi, "phi": math.radians(self.phi), "gamma": self.gamma}

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """y* ~ U[-1, 1]^2 and, as x*, its solution nearest to the origin (metrics use the one
        nearest to the prediction instead)."""
        y_target = sine.sample(n, generator)
        return sine.nearest_solution(torch.zeros_like(y_target), y_target, **self.physics), y_target

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return sine.forward(x, **self.physics)

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """Saddle-free Newton step, computed in float64: the Hessian's eigenvalues span a factor xi^4
        (1e8 at xi = 100), beyond float32, where the weak one rounds to 0 and the step along it vanishes."""
        gradient, hessian = sine.loss_gradient_hessian(x.double(), y_target.double(), **self.physics)
        return sine.saddle_free_newton(gradient, hessian, self.loss_change_limit).to(x.dtype)

    def metrics(
        self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """x_l1 = sum |x - x*| and rel_accuracy = ||x - x*||_2 / xi with x* the solution nearest
        to x (Fig. 5d), and y_l2 = 1/2 ||y - y*||^2."""
        error = x - sine.nearest_solution(x.detach(), y_target, **self.physics)
        return {
            "x_l1": error.abs().sum(1),
            "rel_accuracy": torch.linalg.vector_norm(error, dim=1) / self.xi,
            "y_l2": self.y_loss(y, y_target),
        }

    def figure(self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> Figure:
        """Predictions over the target square: x_1, x_2 and the relative error at each y*."""
        error = self.metrics(x, x_true, y, y_target)["rel_accuracy"]
        panels = {"predicted x_1": x[:, 0], "predicted x_2": x[:, 1], "||x - x*|| / xi": error}
        y_target = y_target.detach().float().cpu()
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False, layout="constrained")
        for ax, (title, values) in zip(axes[0], panels.items()):
            points = ax.scatter(y_target[:, 0], y_target[:, 1], c=values.detach().float().cpu(), cmap="viridis", s=25)
            fig.colorbar(points, ax=ax, fraction=0.046, pad=0.04)
            ax.set(xlim=(-1, 1), ylim=(-1, 1), aspect="equal", xlabel="y*_1", ylabel="y*_2", title=title)
        fig.suptitle(f"sine, xi = {self.xi:g}, phi = {self.phi:g} deg", fontsize=9)
        return fig
