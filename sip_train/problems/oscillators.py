"""Coupled nonlinear oscillators (HIG paper, Schnell, Holl, Thuerey, ICLR 2022): a control sequence
that steers the chain back to its initial state after Nt steps.

The network sees the initial state x0 (which is also the target, y* = x0) and predicts the control
sequence x = c, (B, Nt). The physics needs x0 as well: it is the problem's observed input, drawn with
each example and passed to the hooks after the control (`simulate(c, x0)`). y = P(c; x0) = the state
after Nt RK4 steps. There is no ground-truth control (many controls return the state): `sample` returns
None as x*, the metrics have no x_l1, and runs are ranked by y_l2.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from sip_train.physics import oscillators
from sip_train.problems.base import InverseProblem


class Oscillators(InverseProblem):
    """Steer N coupled cubic oscillators with a control on the last one so that x(Nt dt) = x0.

    Objective per example: sum of squares of (final state - x0), without the usual 1/2, as in the
    authors' scripts, so their learning rates (HIG 1.0) transfer; with batch_reduction "mean" the
    batch objective is their loss per data point. No hand-written inverse update (optimizer=sip falls back on
    a generic inverse solver of the control).

    Args:
        oscillators: number of oscillators N (2 in the paper); the state has 2N components.
        steps: number of RK4 steps Nt, one control value each (96).
        dt: RK4 step size (0.125).
        batch_reduction: "mean" as the authors' scripts (loss / batch size).
    """

    primary_metric = "y_l2"

    def __init__(self, oscillators: int = 2, steps: int = 96, dt: float = 0.125, batch_reduction: str = "mean") -> None:
        super().__init__(batch_reduction)
        for key, value in (("oscillators", oscillators), ("steps", steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"problem.{key}={value!r} is invalid: must be a positive integer")
        if not dt > 0:
            raise ValueError(f"problem.dt={dt!r} is invalid: must be a positive number")
        self.oscillators, self.steps, self.dt = oscillators, steps, float(dt)
        self.x_shape = (steps,)  # what the network predicts: the control sequence
        self.y_shape = (2 * oscillators,)

    def sample(self, n: int, generator: torch.Generator) -> tuple[None, torch.Tensor, torch.Tensor]:
        """No true control (None), y* = x0 ~ U[0, 1)^(2N), (n, 2N), and the observed input x0 (the same tensor)."""
        initial_state = oscillators.sample(n, generator, self.oscillators)
        return None, initial_state, initial_state

    def simulate(self, control: torch.Tensor, initial_state: torch.Tensor) -> torch.Tensor:
        return oscillators.final_state(initial_state.to(control.dtype), control, self.dt)

    def y_loss(self, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """Sum of squares of (final state - target) per example, (B,) (the HIG paper's loss)."""
        return (y - y_target).pow(2).sum(-1)

    def metrics(
        self, control: torch.Tensor, x_true: None, y: torch.Tensor, y_target: torch.Tensor,
        initial_state: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """y_l2 = 1/2 sum (y - y*)^2 (the framework's convention) and paper_loss = sum (y - y*)^2,
        the HIG paper's loss per data point; no x_l1 (there is no true control)."""
        paper_loss = self.y_loss(y, y_target)
        return {"y_l2": 0.5 * paper_loss, "paper_loss": paper_loss}

    def figure(self, control: torch.Tensor, x_true: None, y: torch.Tensor, y_target: torch.Tensor,
               initial_state: torch.Tensor) -> Figure:
        """Per example: the positions and velocities over time (dots: the target x0 at the end), and the control."""
        control = control.detach().double()
        states = oscillators.trajectory(initial_state.detach().double(), control, self.dt).cpu()
        time = torch.arange(self.steps + 1) * self.dt
        fig, axes = plt.subplots(len(control), 2, figsize=(9, 2.2 * len(control)), squeeze=False)
        for example, (ax_state, ax_control) in enumerate(axes):
            for component in range(states.shape[-1]):
                kind, index = ("q", "p")[component // self.oscillators], component % self.oscillators + 1
                line, = ax_state.plot(time, states[example, :, component], lw=1, label=f"{kind}{index}")
                ax_state.plot(time[-1], y_target[example, component].item(), "o", color=line.get_color(), ms=4)
            ax_control.step(time[:-1], control[example].cpu(), where="post", color="k", lw=1)
            ax_state.set_ylabel(f"example {example}", fontsize=8)
        axes[0, 0].set_title("state (dots: target x0)", fontsize=9)
        axes[0, 1].set_title("control c(t)", fontsize=9)
        axes[0, 0].legend(fontsize=7, ncol=2)
        axes[-1, 0].set_xlabel("t")
        axes[-1, 1].set_xlabel("t")
        fig.tight_layout()
        return fig
