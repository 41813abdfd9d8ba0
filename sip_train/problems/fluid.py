"""Navier-Stokes (paper appendix B.4): the initial velocity that carries a marker m0 to mt.

The unknown x is the centred initial velocity v0, (B, 2, N, N); the observation is the marker pair
(m0, mt), which the network sees as two input maps. The physics needs m0 as well as v0: it is the
problem's observed input, drawn with each example and passed to the hooks after x
(`simulate(v0, m0)`), never changed by an update. y = P(v0; m0) = (m0, m(t = 2)).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from sip_train import plots
from sip_train.physics import fluid
from sip_train.problems.base import InverseProblem

FIGURE_TIMES = (0.0, 0.5, 1.0, 1.5, 2.0)


class Fluid(InverseProblem):
    """Incompressible energy-preserving flow on a periodic 128 x 128 domain, 8 steps of dt = 0.25.

    Objective: the Fourier-weighted marker difference of m(t = 2). SIP update: the
    reverse-simulation estimator v~0 (uniform velocity from m0's centre of mass plus a corrected
    central vortex), dx = v~0 - v0. Gradient rules back-propagate through all 8 steps.

    Args:
        resolution: cells per axis (64 in the paper; the physical problem is fixed in length
            units, so a coarser grid discretises the same flow).
        loss_falloff: w_k = exp(-(falloff k)^2 / 2) per integer wave number k (1.25: the
            authors' frequency_falloff 80 at 64 cells).
        sip_gain: step size of the estimator's vortex-strength correction (1e-3).
        batch_reduction: "mean" as the authors' script.
    """

    def __init__(
        self, resolution: int = 64, loss_falloff: float = 1.25, sip_gain: float = fluid.SIP_GAIN,
        batch_reduction: str = "mean",
    ) -> None:
        super().__init__(batch_reduction)
        if resolution < 4 or resolution % 4:
            raise ValueError(f"problem.resolution={resolution} is invalid: must be a positive multiple of 4")
        self.resolution = resolution
        self.loss_falloff = loss_falloff
        self.sip_gain = sip_gain
        self.x_shape = (2, resolution, resolution)  # what the network predicts: v0
        self.y_shape = (2, resolution, resolution)  # (m0, mt)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x* = v0*, (n, 2, N, N), y* = (m0, mt), (n, 2, N, N), and the observed input m0, (n, 1, N, N)."""
        v0, m0, mt = fluid.sample(n, generator, self.resolution)
        return v0, torch.cat([m0, mt], dim=1), m0

    def trajectory(self, v0: torch.Tensor, m0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Staggered velocities (B, 9, 2, N, N) and markers (B, 9, 1, N, N) from the initial state (v0, m0)."""
        return fluid.simulate(v0, m0.to(v0.dtype))

    def simulate(self, v0: torch.Tensor, m0: torch.Tensor) -> torch.Tensor:
        return self._observation(self.trajectory(v0, m0)[1])

    @staticmethod
    def _observation(markers: torch.Tensor) -> torch.Tensor:
        """y = (m0, mt) from the marker trajectory (B, 9, 1, N, N)."""
        return torch.cat([markers[:, 0], markers[:, -1]], dim=1)

    def y_loss(self, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """The Fourier-weighted L1 difference of the final markers, (B,)."""
        return fluid.fourier_weighted_loss(y[:, 1:], y_target[:, 1:], self.loss_falloff)

    def inverse_update(self, v0: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor, m0: torch.Tensor
                       ) -> torch.Tensor:
        return self._update(v0, y_target)

    def simulate_and_update(self, v0: torch.Tensor, y_target: torch.Tensor, m0: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward simulation serves both the observation y and the estimator."""
        trajectory = self.trajectory(v0, m0)
        return self._observation(trajectory[1]), self._update(v0, y_target, trajectory)

    def _update(self, v0: torch.Tensor, y_target: torch.Tensor,
                trajectory: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """dx = v~0 - v0 from the reverse-simulation estimator."""
        estimate = fluid.sip_estimate(v0, y_target[:, :1], y_target[:, 1:], gain=self.sip_gain, trajectory=trajectory)
        return estimate - v0

    def metrics(
        self, v0: torch.Tensor, v0_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor, m0: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """x_l1 = sum |v0 - v0*| over components and cells; gt_v0_l1 = sum over cells of the length
        |v0 - v0*|; y_l2 = 1/2 sum (y - y*)^2; marker_loss = the Fourier-weighted objective.
        In eval mode (validation) also gt_v_l1, the velocity error summed over the 9 frames of the
        trajectory (two more simulations, so not at every training step)."""
        metrics = {
            "x_l1": (v0 - v0_true).abs().flatten(1).sum(1),
            "gt_v0_l1": fluid.gt_v0_l1(v0, v0_true),
            "y_l2": 0.5 * (y - y_target).pow(2).flatten(1).sum(1),
            "marker_loss": self.y_loss(y, y_target),
        }
        if not self.training:
            metrics["gt_v_l1"] = fluid.velocity_trajectory_l1(self.trajectory(v0, m0)[0],
                                                              self.trajectory(v0_true, m0)[0])
        return metrics

    def figure(self, v0: torch.Tensor, v0_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor,
               m0: torch.Tensor) -> Figure:
        """Fig. 14: per example a prediction row and a ground-truth row, each showing the components
        v0_x and v0_y of the initial velocity (one symmetric colour scale per example and component)
        and the marker at t = 0, 0.5, 1, 1.5, 2; every panel has its colourbar."""
        pairs = torch.stack([v0.detach(), v0_true.detach()], dim=1).flatten(0, 1).float()  # prediction, truth, ...
        markers = self.trajectory(pairs, m0.detach().repeat_interleave(2, dim=0))[1][:, :, 0].cpu().numpy()
        velocity = pairs.cpu().numpy()
        frames = [round(t / fluid.DURATION * fluid.STEPS) for t in FIGURE_TIMES]
        titles = ["v0_x (velocity x-component)", "v0_y (velocity y-component)",
                  *(f"marker t={t:g}" for t in FIGURE_TIMES)]
        fig, axes = plt.subplots(len(pairs), len(titles), figsize=(2.1 * len(titles), 1.9 * len(pairs)),
                                 squeeze=False, layout="constrained")
        for row, ax_row in enumerate(axes):
            for component in range(2):
                top = float(abs(velocity[row - row % 2 : row - row % 2 + 2, component]).max()) or 1.0
                plots.image(ax_row[component], velocity[row, component], cmap="RdBu_r", vmin=-top, vmax=top)
            for ax, frame in zip(ax_row[2:], frames):
                plots.image(ax, markers[row, frame], vmin=0, vmax=1)
            ax_row[0].set_ylabel(f"{'prediction' if row % 2 == 0 else 'ground truth'} {row // 2}", fontsize=8)
        for ax, title in zip(axes[0], titles):
            ax.set_title(title, fontsize=8)
        return fig
