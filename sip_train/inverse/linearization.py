"""The physics linearised around a batch of estimates: products with J = dP/dx and H = d^2 y_loss / dy^2."""
from __future__ import annotations

import torch

from sip_train.problems.base import InverseProblem

JACOBIAN_MODES = ("auto", "forward", "reverse")


def supports_forward_mode(problem: InverseProblem, x: torch.Tensor) -> bool:
    """Whether torch.func.jvp differentiates problem.simulate at x (custom autograd Functions without
    a jvp rule, or PhiFlow's grid_sample advection, do not)."""
    try:
        with torch.enable_grad():
            torch.func.jvp(problem.simulate, (x.detach(),), (torch.zeros_like(x),))
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def prefers_forward_mode(problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor) -> bool:
    """The "auto" choice of J v: the double vjp where simulate's backward pass is itself differentiable
    (it reuses one recorded forward pass and measured 5-20x faster than torch.func.jvp on CPU, see
    BENCHMARKS.md), else forward mode."""
    try:
        Linearization(problem, x, y_target, forward_mode=False).jvp(torch.zeros_like(x))
    except (RuntimeError, NotImplementedError):
        return True
    return False


class Linearization:
    """y = P(x), the per-example loss L(x) = y_loss(y, y*), its gradient on the unknowns and the
    products J v (forward mode, or the double-vjp identity J v = d/du <J^T u, v>), J^T u and H u.

    Every product is per example (P acts on each example alone, so J is block diagonal) and is
    restricted to the unknowns: vectors on the known components count as zero.

    Args:
        problem: the problem whose `simulate`, `y_loss` and `unknown_mask` are used.
        x: estimates (B, ...), detached.
        y_target: observations (B, ...).
        forward_mode: J v by torch.func.jvp; else by the double vjp.
    """

    def __init__(self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, forward_mode: bool) -> None:
        self.problem, self.y_target, self.forward_mode = problem, y_target, forward_mode
        self.mask = problem.unknown_mask(x)
        self.plain_l2 = type(problem).y_loss is InverseProblem.y_loss  # H = I: no Hessian products needed
        with torch.enable_grad():
            self.x = x.detach().requires_grad_(True)
            self.y = problem.simulate(self.x)
            self._y_leaf = self.y.detach().requires_grad_(True)
            loss = problem.y_loss(self._y_leaf, y_target)
            (self._loss_gradient,) = torch.autograd.grad(loss.sum(), self._y_leaf, create_graph=not self.plain_l2)
        self.loss = loss.detach()
        self.gradient = self.vjp(self._loss_gradient.detach())
        self._cotangent: torch.Tensor | None = None
        self._vjp_graph: torch.Tensor | None = None

    def restrict(self, v: torch.Tensor) -> torch.Tensor:
        """v with its known components set to 0."""
        return torch.where(self.mask, v, 0.0)

    def vjp(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u on the unknowns, (B, *y) -> (B, *x)."""
        with torch.enable_grad():
            (product,) = torch.autograd.grad(self.y, self.x, u, retain_graph=True)
        return self.restrict(product)

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v for v on the unknowns, (B, *x) -> (B, *y)."""
        v = self.restrict(v)
        with torch.enable_grad():
            if self.forward_mode:
                return torch.func.jvp(self.problem.simulate, (self.x.detach(),), (v,))[1]
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
