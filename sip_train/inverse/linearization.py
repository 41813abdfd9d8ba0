"""The physics linearised around a batch of estimates: products with J = dP/dx and H = d^2 y_loss / dy^2."""
from __future__ import annotations

import torch

from sip_train.problems.base import InverseProblem, Observed

JACOBIAN_MODES = ("auto", "forward", "reverse")


def supports_forward_mode(problem: InverseProblem, x: torch.Tensor, observed: Observed = ()) -> bool:
    """Whether torch.func.jvp differentiates problem.simulate at x (custom autograd Functions without
    a jvp rule, or PhiFlow's grid_sample advection, do not)."""
    try:
        with torch.enable_grad():
            torch.func.jvp(lambda v: problem.simulate(v, *observed), (x.detach(),), (torch.zeros_like(x),))
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def prefers_forward_mode(problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor,
                         observed: Observed = ()) -> bool:
    """The "auto" choice of J v: the double vjp where simulate's backward pass is itself differentiable
    (it reuses one recorded forward pass and measured 5-20x faster than torch.func.jvp on CPU, see
    BENCHMARKS.md), else forward mode."""
    try:
        Linearization(problem, x, y_target, forward_mode=False, observed=observed).jvp(torch.zeros_like(x))
    except (RuntimeError, NotImplementedError):
        return True
    return False


class Linearization:
    """y = P(x), the per-example loss L(x) = y_loss(y, y*), its gradient and the products J v (forward
    mode, or the double-vjp identity J v = d/du <J^T u, v>), J^T u and H u.

    Every product is per example (P acts on each example alone, so J is block diagonal); x holds the
    unknowns only, the observed inputs stay fixed.

    Args:
        problem: the problem whose `simulate` and `y_loss` are used.
        x: estimates (B, ...), detached.
        y_target: observations (B, ...).
        forward_mode: J v by torch.func.jvp; else by the double vjp.
        observed: the problem's observed inputs of the batch, passed to `simulate` after x.
    """

    def __init__(self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, forward_mode: bool,
                 observed: Observed = ()) -> None:
        self.problem, self.y_target, self.forward_mode, self.observed = problem, y_target, forward_mode, observed
        self.plain_l2 = type(problem).y_loss is InverseProblem.y_loss  # H = I: no Hessian products needed
        with torch.enable_grad():
            self.x = x.detach().requires_grad_(True)
            self.y = problem.simulate(self.x, *observed)
            self._y_leaf = self.y.detach().requires_grad_(True)
            loss = problem.y_loss(self._y_leaf, y_target)
            (self._loss_gradient,) = torch.autograd.grad(loss.sum(), self._y_leaf, create_graph=not self.plain_l2)
        self.loss = loss.detach()
        self.gradient = self.vjp(self._loss_gradient.detach())
        self._cotangent: torch.Tensor | None = None
        self._vjp_graph: torch.Tensor | None = None

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u, (B, *y) -> (B, *x)."""
        with torch.enable_grad():
            (product,) = torch.autograd.grad(self.y, self.x, u, retain_graph=True)
        return product

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v, (B, *x) -> (B, *y)."""
        with torch.enable_grad():
            if self.forward_mode:
                return torch.func.jvp(lambda x: self.problem.simulate(x, *self.observed), (self.x.detach(),), (v,))[1]
            if self._vjp_graph is None:  # J^T u as a differentiable function of u, built once
                self._cotangent = torch.zeros_like(self.y, requires_grad=True)
                (self._vjp_graph,) = torch.autograd.grad(self.y, self.x, self._cotangent, create_graph=True)
            (product,) = torch.autograd.grad(self._vjp_graph, self._cotangent, v, retain_graph=True)
        return product

    def hvp(self, u: torch.Tensor) -> torch.Tensor:
        """H u with H the Hessian of y_loss in y at P(x) (u itself for the plain L2 loss)."""
        if self.plain_l2:
            return u
        if not self._loss_gradient.requires_grad:  # y_loss linear in y
            return torch.zeros_like(u)
        with torch.enable_grad():
            (product,) = torch.autograd.grad(self._loss_gradient, self._y_leaf, u, retain_graph=True, allow_unused=True)
        return torch.zeros_like(u) if product is None else product

    def gauss_newton_product(self, v: torch.Tensor) -> torch.Tensor:
        """J^T H J v, the Gauss-Newton approximation of the Hessian of L times v."""
        return self.vjp(self.hvp(self.jvp(v)))
