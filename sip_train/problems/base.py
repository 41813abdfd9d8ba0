"""The interface every inverse problem implements: data, physics, SIP update, metrics, figure.

A problem is a plain `nn.Module` (so its buffers follow the device) with no training logic:
the training step is written once in `sip_train.module`, and the same problem object runs
in a bare PyTorch loop (see bench/).
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

from sip_train import plots

BATCH_REDUCTIONS = ("sum", "mean")


class InverseProblem(nn.Module):
    """Find x with P(x) = y* for observed y*; subclasses implement the hooks below.

    Attributes:
        x_shape: shape of one solution x (channels first, no batch dimension).
        y_shape: shape of one observation y.
        batch_reduction: how per-example objectives become the batch objective ("sum" or
            "mean"), matching the paper's scripts so their learning rates transfer.
        primary_metric: the key of `metrics` that ranks runs and checkpoints (x_l1 unless the
            problem has no ground-truth x).
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    primary_metric: str = "x_l1"  # the validation metric (lower is better) that picks the best checkpoint
    autocast_physics: bool = False  # under bf16-mixed/16-mixed, run the physics and metrics under autocast too

    def __init__(self, batch_reduction: str = "sum") -> None:
        super().__init__()
        if batch_reduction not in BATCH_REDUCTIONS:
            raise ValueError(
                f"problem.batch_reduction={batch_reduction!r} is invalid: choose one of {list(BATCH_REDUCTIONS)}"
            )
        self.batch_reduction = batch_reduction

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n ground-truth solutions and their observations (x*, y*) on generator.device."""
        raise NotImplementedError

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        """The differentiable forward physics y = P(x)."""
        raise NotImplementedError

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """The SIP update dx = U(x) (step size 1) from an inverse or higher-order solver."""
        raise NotImplementedError(f"problem {type(self).__name__} has no inverse update, so optimizer=sip cannot train it")

    def simulate_and_update(self, x: torch.Tensor, y_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = P(x) and dx = U(x) together, what a SIP step needs; problems whose update can reuse
        the forward simulation (fluid) override this to simulate once."""
        y = self.simulate(x)
        return y, self.inverse_update(x, y, y_target)

    def unknown_mask(self, x: torch.Tensor) -> torch.Tensor:
        """Which components of the solution estimate x the network predicts: a bool tensor of shape
        (1, *x.shape[1:]), the same for every example. Proxy rules and generic inverse solvers move
        only these; the rest is known (fluid's observed marker m0). Default: all of x."""
        return torch.ones((1, *x.shape[1:]), dtype=torch.bool, device=x.device)

    @classmethod
    def has_inverse_update(cls) -> bool:
        """Whether this problem implements `inverse_update` (needed by SIP training)."""
        return cls.inverse_update is not InverseProblem.inverse_update

    def network_input(self, y_target: torch.Tensor) -> torch.Tensor:
        """What the network sees: the observation in the default dtype (float32; float64 under
        trainer.precision=64-true), whatever the physics precision."""
        return y_target.to(torch.get_default_dtype())

    def prepare_prediction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """Turn the raw network output into the solution estimate (e.g. enforce known invariants)."""
        return x

    def y_loss(self, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """Per-example observation loss, 1/2 sum of squares over all cells: shape (B,)."""
        return 0.5 * (y - y_target).pow(2).flatten(1).sum(1)

    def physics_loss(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        """Per-example L(x) = y_loss(P(x), y*)."""
        return self.y_loss(self.simulate(x), y_target)

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        """Batch objective from per-example values, by `batch_reduction`."""
        return per_example.sum() if self.batch_reduction == "sum" else per_example.mean()

    def metrics(
        self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-example metrics, each of shape (B,): x_l1 = sum |x - x*|, y_l2 = 1/2 sum (y - y*)^2."""
        return {"x_l1": (x - x_true).abs().flatten(1).sum(1), "y_l2": self.y_loss(y, y_target)}

    def reference_metrics(self, x_true: torch.Tensor, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-example metrics of a non-learned baseline on the validation set (e.g. an iterative
        solver), computed once and logged beside the network's at every validation."""
        return {}

    def figure(self, x: torch.Tensor, x_true: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> Figure:
        """A few validation examples: observed y* beside the simulated y = P(x), and the predicted x beside
        the true x*, drawn by their shapes (fields as images, vectors and signals as lines, scalars as a
        scatter plot); problems override it for a view of their own."""
        return plots.examples_figure({
            "observation y": (y, y_target, ("simulated y", "observed y*")),
            "solution x": (x, x_true, ("predicted x", "true x*")),
        })


class GridProblem(InverseProblem):
    """A problem whose solution and observation are single-channel 2D fields (1, N, N)."""

    def __init__(self, resolution: int = 64, batch_reduction: str = "sum") -> None:
        super().__init__(batch_reduction)
        if resolution < 2:
            raise ValueError(f"problem.resolution={resolution} is invalid: must be at least 2")
        self.resolution = resolution
        self.x_shape = self.y_shape = (1, resolution, resolution)
