"""Inverting the exponential y = e^x (paper appendix C.2): gradients vanish like e^x for small x."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from sip_train.physics import exponential
from sip_train.problems.base import InverseProblem


class Exp(InverseProblem):
    """Find x with e^x = y*, x* ~ U[x_range); SIP update: the descent-signed Newton step.

    Args:
        x_range: (low, high) of the ground truth, [-12, 0] in the paper.
        clip: largest Newton step magnitude (0.1 in the paper's clipped variant), or None.
        batch_reduction: "sum" as the authors' script.
    """

    x_shape = (1,)
    y_shape = (1,)
    ensemble_parameters = ("x_range",)  # values an ensemble's members may differ in

    def __init__(
        self, x_range: tuple[float, float] = (-12.0, 0.0), clip: float | None = None, batch_reduction: str = "sum"
    ) -> None:
        super().__init__(batch_reduction)
        if len(x_range) != 2 or not x_range[0] < x_range[1]:
            raise ValueError(f"problem.x_range={list(x_range)} is invalid: needs [low, high] with low < high")
        if clip is not None and not clip > 0:
            raise ValueError(f"problem.clip={clip!r} is invalid: must be a positive number or null")
        self.x_range = (float(x_range[0]), float(x_range[1]))
        self.clip = clip

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return exponential.sample(n, generator, self.x_range)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return exponential.forward(x)

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return exponential.newton_update(x, y_target, self.clip)

    def figure(self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> Figure:
        """Predictions x against log y*, over the exact inverse x = ln y*."""
        fig, ax = plt.subplots(figsize=(4.2, 3.4), layout="constrained")
        curve = np.linspace(*self.x_range, 200)
        ax.plot(curve, curve, color="0.6", label="x* = ln y*")
        log_target = y_target.detach().double().log().cpu()
        ax.scatter(log_target[:, 0], x.detach().double().cpu()[:, 0], color="C1", s=20, label="predicted x")
        ax.set(xlabel="ln y*", ylabel="x", title="exp: predictions")
        ax.legend(fontsize=8, loc="upper left")  # the curve rises to the upper right: this corner stays free
        return fig
