"""Gradient normalisation (paper appendix C.2): regress the network onto x~ = x - eta * sign(dL/dx)."""
from __future__ import annotations

import torch

from sip_train.problems.base import InverseProblem
from sip_train.rules.sip import ProxyRule


class NormalizedGradient(ProxyRule):
    """x-space update dx = -sign(dL/dx) of the physics loss L(x) = y_loss(P(x), y*), per cell.

    Trained like SIP on the proxy objective 1/2 ||NN(y*) - stop_grad(x + eta dx)||^2, so the
    network receives the normalised adjoint eta * sign(dL/dx) in place of dL/dx. Needs only
    the gradient of the physics, so it trains every problem.
    """

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():  # the proxy objective computes x~ under no_grad
            x = x.detach().requires_grad_(True)
            y = problem.simulate(x, *observed)
            (gradient,) = torch.autograd.grad(problem.y_loss(y, y_target).sum(), x)
        return y.detach(), -gradient.sign()
