"""Wave packet localisation (paper appendix C.1): a network against per-example L-BFGS-B.

There is no inverse update (SIP does not apply). The paper uses it to argue that a network trained
with Adam explores the solution space better than an iterative solver from a fixed guess, so the
solver's metrics are logged beside the network's on the same validation set (whether it does here,
at the paper's carrier frequency and at a lower one: REPRODUCTION.md).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from sip_train.physics import wave_packet
from sip_train.problems.base import InverseProblem


class WavePacket(InverseProblem):
    """Find the offset t0 (samples) of a noisy packet y(t) = A sin(f (t - t0)) exp(-(t - t0)^2 / (2 sigma^2)).

    x = t0, shape (1,); y = the 256 samples, shape (1, 256). The L-BFGS-B baseline starts
    every example from the centre of `t0_range` (76.8 in the paper).

    Args:
        t0_range: (low, high) of the uniform offset distribution, [25.6, 128).
        noise: standard deviation of the additive Gaussian noise (0.1).
        amplitude, frequency, sigma: A = 1, f = 0.7 rad per sample, sigma = 20 samples.
        lbfgsb_max_iter: iteration limit of the baseline per example.
        batch_reduction: "mean" or "sum" of the per-example squared error.
    """

    def __init__(
        self,
        t0_range: tuple[float, float] = (25.6, 128.0),
        noise: float = 0.1,
        amplitude: float = 1.0,
        frequency: float = 0.7,
        sigma: float = 20.0,
        lbfgsb_max_iter: int = 1000,
        batch_reduction: str = "mean",
    ) -> None:
        super().__init__(batch_reduction)
        if len(t0_range) != 2 or not t0_range[0] < t0_range[1]:
            raise ValueError(f"problem.t0_range={list(t0_range)} is invalid: needs [low, high] with low < high")
        if noise < 0:
            raise ValueError(f"problem.noise={noise!r} is invalid: must be non-negative")
        self.t0_range = (float(t0_range[0]), float(t0_range[1]))
        self.noise = noise
        self.packet = {"amplitude": amplitude, "frequency": frequency, "sigma": sigma}
        self.lbfgsb_max_iter = lbfgsb_max_iter
        self.x_shape = (1,)
        self.y_shape = (1, wave_packet.SAMPLES)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return wave_packet.sample(n, generator, self.noise, self.t0_range, **self.packet)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return wave_packet.forward(x, **self.packet)

    def fit_lbfgsb(self, y_target: torch.Tensor) -> torch.Tensor:
        """Per-example L-BFGS-B estimate of t0 from the centre of the range, (B, 1, T) -> (B, 1)."""
        centre = 0.5 * (self.t0_range[0] + self.t0_range[1])
        return wave_packet.fit_lbfgsb(y_target, centre, self.t0_range, self.lbfgsb_max_iter, **self.packet)

    def reference_metrics(self, x_true: torch.Tensor, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The L-BFGS-B baseline's x_l1 = |t0 - t0*| and y_l2, as lbfgsb_x_l1 and lbfgsb_y_l2."""
        with torch.inference_mode(False), torch.enable_grad():  # the fit differentiates the packet
            t0 = self.fit_lbfgsb(y_target)
        metrics = super().metrics(t0, x_true, self.simulate(t0), y_target)
        return {f"lbfgsb_{name}": value for name, value in metrics.items()}

    def figure(self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> Figure:
        """Each example's observed series with the network's fit, L-BFGS-B's fit and the true packet."""
        with torch.inference_mode(False), torch.enable_grad():
            baseline = self.fit_lbfgsb(y_target)
        curves = {
            "observed y*": (y_target, None),
            "true packet": (self.simulate(x_true), x_true),
            "network": (y, x),
            "L-BFGS-B": (self.simulate(baseline), baseline),
        }
        examples = len(x)
        fig, axes = plt.subplots(examples, 1, figsize=(7, 1.9 * examples + 0.4), squeeze=False, sharex=True,
                                 layout="constrained")
        for row, ax in enumerate(axes[:, 0]):
            for index, (label, (series, t0)) in enumerate(curves.items()):
                style = {"color": f"C{index}", "lw": 1.2}
                if t0 is None:
                    style = {"color": "0.7", "lw": 0.8}
                elif label == "true packet":  # wide and faint, so a matching fit stays visible on top
                    style = {"color": f"C{index}", "lw": 3.0, "alpha": 0.5}
                ax.plot(series[row, 0].detach().float().cpu(), label=label, **style)
                if t0 is not None:
                    ax.axvline(float(t0[row, 0]), color=f"C{index}", ls=":", lw=1)
            ax.set_ylabel(f"t0* = {float(x_true[row, 0]):.1f}", fontsize=8)
        fig.legend(*axes[0, 0].get_legend_handles_labels(), fontsize=7, ncols=4, loc="outside lower center")
        axes[-1, 0].set_xlabel("t (samples)")
        return fig
