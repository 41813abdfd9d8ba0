"""SIP training: regress the network onto x~ = x + eta * dx from an inverse solver of the physics."""
from __future__ import annotations

import torch

from sip_train import values
from sip_train.inverse.auto import Auto
from sip_train.inverse.base import InverseSolver
from sip_train.problems.base import InverseProblem
from sip_train.rules.base import OptimizerFactory, UpdateRule

PROXY_NORMS = ("l2", "l1")


class ProxyRule(UpdateRule):
    """Train on the proxy objective ||NN(y*) - stop_grad(x + dx)|| for an x-space update dx.

    Subclasses choose dx in `simulate_and_update`, which also returns y = P(x) so the update can
    reuse the simulation; the network never sees a gradient through the physics. x and dx hold the
    unknowns only; the problem's observed inputs reach the physics unchanged.

    Args:
        eta: step size of the x-space update.
        proxy_norm: "l2" (1/2 sum of squares) or "l1" (sum of absolute values) per example.
    """

    ensemble_parameters = ("eta",)  # a factor on each example's update: members may differ in it

    def __init__(self, optimizer: OptimizerFactory, lr: float, eta: float = 1.0, proxy_norm: str = "l2",
                 create_graph: bool = False) -> None:
        super().__init__(optimizer, lr, create_graph)
        self.eta = values.number("optimizer.eta", eta)
        self.proxy_norm = values.choice("optimizer.proxy_norm", proxy_norm, PROXY_NORMS)

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """y = P(x) (detached) and the x-space update dx at a detached prediction x."""
        raise NotImplementedError

    def objective(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            x_detached = x.detach()
            y, dx = self.simulate_and_update(problem, x_detached, y_target, *observed)
            x_target = x_detached + self.eta * dx
        difference = (x - x_target).flatten(1)
        if self.proxy_norm == "l1":
            return difference.abs().sum(1), y
        return 0.5 * difference.pow(2).sum(1), y


class SIP(ProxyRule):
    """Scale-invariant physics: dx = U(x) - x from an inverse solver (the `inverse` config group):
    the problem's hand-written one, or a generic solver that needs only simulate() and y_loss().

    Its declarations follow the solver's (`inverse.differentiates_physics_twice`, `inverse.vectorizable`);
    the solver is `rule.inverse`, its `name` says which one runs.

    Args:
        inverse: the solver (default: `Auto`, the problem's own inverse else Gauss-Newton).
    """

    def __init__(self, optimizer: OptimizerFactory, lr: float, eta: float = 1.0, proxy_norm: str = "l2",
                 inverse: InverseSolver | None = None, create_graph: bool = False) -> None:
        super().__init__(optimizer, lr, eta, proxy_norm, create_graph)
        self.inverse = Auto() if inverse is None else inverse

    @property
    def differentiates_physics_twice(self) -> bool:
        return self.needs_double_backward or self.inverse.differentiates_physics_twice

    @property
    def vectorizable(self) -> bool:
        return self.updates_by_loss and self.inverse.vectorizable

    def check(self, problem: InverseProblem, network: torch.nn.Module) -> None:
        self.inverse.check(problem)

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inverse.simulate_and_update(problem, x, y_target, *observed)
