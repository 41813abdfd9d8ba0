"""The interface every inverse problem implements: data, physics, SIP update, metrics, figure.

A problem is a plain `nn.Module` (so its buffers follow the device) with no training logic:
the training step is written once in `sip_train.module`, and the same problem object runs
in a bare PyTorch loop (see bench/).

x is what the network predicts, the unknowns (`x_shape`). A problem whose simulator needs known
inputs besides x (the fluid's initial marker, the oscillators' initial state) returns them from
`sample` after (x*, y*): a batch is `(x*, y*, *observed)`, and every hook that simulates takes them
after its own arguments (`simulate(x, *observed)`). Problems without observed inputs return (x*, y*)
and never see them. x* is a true solution, or None where the problem knows none (the oscillators).
"""
from __future__ import annotations

import torch
from matplotlib.figure import Figure
from torch import nn

from sip_train import plots

BATCH_REDUCTIONS = ("sum", "mean")

#: What `sample` returns and the data module hands out: (x* or None, y*, *observed inputs).
Batch = tuple[torch.Tensor | None, ...]
#: The observed inputs of a batch, what follows (x*, y*): passed to the simulating hooks after x (empty for most problems).
Observed = tuple[torch.Tensor, ...]


def batch_rows(batch: Batch, rows: slice | torch.Tensor) -> Batch:
    """The examples `rows` of every tensor of a batch (a missing x* stays None)."""
    return tuple(None if t is None else t[rows] for t in batch)


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of a batch on `device` (a missing x* stays None)."""
    return tuple(None if t is None else t.to(device) for t in batch)


class InverseProblem(nn.Module):
    """Find x with P(x) = y* for observed y*; subclasses implement the hooks below.

    Attributes:
        x_shape: shape of one solution x, the unknowns the network predicts (channels first, no
            batch dimension).
        y_shape: shape of one observation y.
        batch_reduction: how per-example objectives become the batch objective ("sum" or
            "mean"), matching the paper's scripts so their learning rates transfer.
        primary_metric: the key of `metrics` that ranks runs and checkpoints (x_l1 unless the
            problem has no ground-truth x).
    """

    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    primary_metric: str = "x_l1"  # the validation metric (lower is better) that picks the best checkpoint
    #: scalar constructor arguments that may differ between the members of one vectorised ensemble
    ensemble_parameters: tuple[str, ...] = ()
    autocast_physics: bool = False  # under bf16-mixed/16-mixed, run the physics and metrics under autocast too

    def __init__(self, batch_reduction: str = "sum") -> None:
        super().__init__()
        if batch_reduction not in BATCH_REDUCTIONS:
            raise ValueError(
                f"problem.batch_reduction={batch_reduction!r} is invalid: choose one of {list(BATCH_REDUCTIONS)}"
            )
        self.batch_reduction = batch_reduction

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """Draw n examples on generator.device: (x*, y*), or (x*, y*, *observed) where the simulator
        needs known inputs besides x; x* is None where no true solution is known."""
        raise NotImplementedError

    def simulate(self, x: torch.Tensor, *observed: torch.Tensor) -> torch.Tensor:
        """The differentiable forward physics y = P(x) (given the observed inputs, if the problem has any)."""
        raise NotImplementedError

    def inverse_update(
        self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> torch.Tensor:
        """The SIP update dx = U(x) (step size 1) from an inverse or higher-order solver."""
        raise NotImplementedError(f"problem {type(self).__name__} has no inverse update, so optimizer=sip cannot train it")

    def simulate_and_update(
        self, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """y = P(x) and dx = U(x) together, what a SIP step needs; problems whose update can reuse
        the forward simulation (fluid) override this to simulate once."""
        y = self.simulate(x, *observed)
        return y, self.inverse_update(x, y, y_target, *observed)

    @classmethod
    def has_inverse_update(cls) -> bool:
        """Whether this problem provides a SIP update, by overriding `inverse_update` or `simulate_and_update`."""
        return (cls.inverse_update is not InverseProblem.inverse_update
                or cls.simulate_and_update is not InverseProblem.simulate_and_update)

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

    def physics_loss(self, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor) -> torch.Tensor:
        """Per-example L(x) = y_loss(P(x), y*)."""
        return self.y_loss(self.simulate(x, *observed), y_target)

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        """Batch objective from per-example values, by `batch_reduction`."""
        return per_example.sum() if self.batch_reduction == "sum" else per_example.mean()

    def metrics(
        self, x: torch.Tensor, x_true: torch.Tensor | None, y: torch.Tensor, y_target: torch.Tensor,
        *observed: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per-example metrics, each of shape (B,): x_l1 = sum |x - x*| (where x* is known),
        y_l2 = 1/2 sum (y - y*)^2."""
        errors = {} if x_true is None else {"x_l1": (x - x_true).abs().flatten(1).sum(1)}
        return {**errors, "y_l2": self.y_loss(y, y_target)}

    def reference_metrics(
        self, x_true: torch.Tensor | None, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Per-example metrics of a non-learned baseline on the validation set (e.g. an iterative
        solver), computed once and logged beside the network's at every validation."""
        return {}

    def figure(
        self, x: torch.Tensor, x_true: torch.Tensor | None, y: torch.Tensor, y_target: torch.Tensor,
        *observed: torch.Tensor,
    ) -> Figure:
        """A few validation examples: observed y* beside the simulated y = P(x), and the predicted x beside
        the true x* (where known), drawn by their shapes (fields as images, vectors and signals as lines,
        scalars as a scatter plot); problems override it for a view of their own."""
        panels = {"observation y": (y, y_target, ("simulated y", "observed y*"))}
        if x_true is not None:
            panels["solution x"] = (x, x_true, ("predicted x", "true x*"))
        return plots.examples_figure(panels)


class GridProblem(InverseProblem):
    """A problem whose solution and observation are single-channel 2D fields (1, N, N)."""

    def __init__(self, resolution: int = 64, batch_reduction: str = "sum") -> None:
        super().__init__(batch_reduction)
        if resolution < 2:
            raise ValueError(f"problem.resolution={resolution} is invalid: must be at least 2")
        self.resolution = resolution
        self.x_shape = self.y_shape = (1, resolution, resolution)
