"""What an inverse solver is to the SIP rule: dx at a batch of predictions, from the physics alone."""
from __future__ import annotations

import torch

from sip_train import values
from sip_train.problems.base import InverseProblem, Observed


def positive_int(name: str, value: object) -> int:
    """`value` if it is a positive integer, else a ValueError naming inverse.<name>."""
    return values.integer(f"inverse.{name}", value)


def positive_float(name: str, value: object, allow_zero: bool = False) -> float:
    """`value` as a float if it is positive (or zero where allowed), else a ValueError naming inverse.<name>."""
    return values.number(f"inverse.{name}", value, "[0, inf)" if allow_zero else "(0, inf)")


class InverseSolver:
    """Computes SIP's x-space update dx = U(x) - x for a batch of predictions x, per example.

    Generic solvers see only the problem's `simulate` and `y_loss`, never the network; x holds the
    unknowns only, and the problem's observed inputs (if any) are passed to `simulate` unchanged.

    Declarations, read by compile=true and the execution modes (never a test for a concrete class):

    Attributes:
        name: the config option selecting it (inverse=<name>), for messages and the run's record.
        differentiates_physics_twice: whether it differentiates the simulator's derivatives (J v by a
            double vjp or forward mode), which compiled physics do not support.
        vectorizable: whether it works example by example, so that the batches of several networks can be
            folded into one K*B batch (true for every solver whose examples do not interact).
    """

    name: str = "generic"
    differentiates_physics_twice: bool = False
    vectorizable: bool = True

    def check(self, problem: InverseProblem) -> None:
        """Fail at start-up, in one line, if this solver cannot invert `problem`: here, if its
        simulate is not differentiable with torch autograd on a sampled example."""
        x, y_target, observed = example_point(problem)
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                loss = problem.y_loss(problem.simulate(x, *observed), y_target).sum()
                (gradient,) = torch.autograd.grad(loss, x)
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(
                f"inverse={self.name} needs a simulate() differentiable by torch autograd, which problem "
                f"{type(problem).__name__} does not provide ({first_line}); use inverse=problem or a gradient-free rule"
            ) from None
        if not torch.isfinite(gradient).all():
            raise ValueError(f"inverse={self.name}: problem {type(problem).__name__}'s simulate() has a non-finite gradient "
                             "at a sampled example")

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """y = P(x) (detached) and the update dx (B, *x) at the detached predictions x, given the
        problem's observed inputs."""
        raise NotImplementedError


def example_point(problem: InverseProblem) -> tuple[torch.Tensor, torch.Tensor, Observed]:
    """Two sampled examples to check a solver on: a point x (the true solution, or zeros where the
    problem knows none), y* and the observed inputs."""
    x_true, y_target, *observed = problem.sample(2, torch.Generator().manual_seed(0))
    x = torch.zeros(2, *problem.x_shape, dtype=y_target.dtype) if x_true is None else x_true
    return x, y_target, tuple(observed)


def loss_and_gradient(
    problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, observed: Observed = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-example L(x) = y_loss(P(x), y*) (B,), its gradient (B, *x) and y = P(x), detached."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        y = problem.simulate(x, *observed)
        loss = problem.y_loss(y, y_target)
        (gradient,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), gradient, y.detach()
