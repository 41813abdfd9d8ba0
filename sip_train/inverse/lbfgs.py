"""Per-example L-BFGS from the prediction (the paper's fluid "BFGS" variant of x~), batched."""
from __future__ import annotations

import torch

from sip_train.inverse.base import InverseSolver, loss_and_gradient, positive_float, positive_int
from sip_train.convergence import StopFlag
from sip_train.inverse.cg import batch_dot, per_example
from sip_train.problems.base import InverseProblem, Observed


def two_loop(gradient: torch.Tensor, steps: list[torch.Tensor], changes: list[torch.Tensor]) -> torch.Tensor:
    """The inverse-Hessian estimate times the gradient, per example, from the stored pairs (s, y).

    A pair with y.s <= 0 for an example is skipped for that example. The initial scale is
    s.y / y.y of the newest valid pair, else min(1, 1 / ||g||_1) (torch.optim.LBFGS's first step).
    """
    tiny = torch.finfo(gradient.dtype).tiny
    curvatures = [batch_dot(s, y) for s, y in zip(steps, changes)]
    rhos = [torch.where(c > tiny, 1 / c.clamp_min(tiny), 0.0) for c in curvatures]
    q = gradient
    alphas = []
    for s, y, rho in reversed(list(zip(steps, changes, rhos))):
        alpha = rho * batch_dot(s, q)
        q = q - per_example(alpha, q) * y
        alphas.append(alpha)
    scale = (1 / gradient.abs().flatten(1).sum(1).clamp_min(tiny)).clamp_max(1.0)
    for y, c, rho in zip(changes, curvatures, rhos):
        scale = torch.where(rho > 0, c / batch_dot(y, y).clamp_min(tiny), scale)
    r = per_example(scale, q) * q
    for s, y, rho, alpha in zip(steps, changes, rhos, reversed(alphas)):
        beta = rho * batch_dot(y, r)
        r = r + per_example(alpha - beta, r) * s
    return r


class LBFGS(InverseSolver):
    """x~ after `iterations` L-BFGS iterations on L_i(x) = y_loss(P(x), y*_i) from the prediction,
    every example with its own history and its own backtracking (Armijo) line search.

    Args:
        iterations: L-BFGS iterations per SIP update (16: the paper's fluid variant).
        memory: (s, y) pairs kept per example.
        line_search_steps: step halvings tried before an example stays put for this iteration.
        armijo: sufficient-decrease constant c1.
        check_every: line-search trials between posts of whether every example has accepted its step
            (`StopFlag`; the search stops early only once the host has seen one; the result is the same
            for any value).
    """

    name = "lbfgs"

    def __init__(self, iterations: int = 16, memory: int = 10, line_search_steps: int = 10, armijo: float = 1e-4,
                 check_every: int = 2) -> None:
        self.iterations = positive_int("iterations", iterations)
        self.memory = positive_int("memory", memory)
        self.line_search_steps = positive_int("line_search_steps", line_search_steps)
        self.armijo = positive_float("armijo", armijo)
        self.check_every = positive_int("check_every", check_every)

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        loss, gradient, y = loss_and_gradient(problem, x, y_target, observed)
        estimate = x.detach()
        steps: list[torch.Tensor] = []
        changes: list[torch.Tensor] = []
        for _ in range(self.iterations):
            direction = -two_loop(gradient, steps, changes)
            slope = batch_dot(gradient, direction)
            descent = slope < 0
            direction = torch.where(per_example(descent, x), direction, -gradient)
            slope = torch.where(descent, slope, -batch_dot(gradient, gradient))
            new_estimate, new_loss, new_gradient = self._line_search(problem, y_target, observed, estimate, loss,
                                                                     gradient, direction, slope)
            steps = (steps + [new_estimate - estimate])[-self.memory:]
            changes = (changes + [new_gradient - gradient])[-self.memory:]
            estimate, loss, gradient = new_estimate, new_loss, new_gradient
        return y, estimate - x

    def _line_search(self, problem: InverseProblem, y_target: torch.Tensor, observed: Observed,
                     estimate: torch.Tensor, loss: torch.Tensor, gradient: torch.Tensor, direction: torch.Tensor,
                     slope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-example backtracking from step length 1; examples without sufficient decrease stay put.
        Trials after every example has accepted change nothing, so the host learns of that only every
        `check_every` trials, without waiting for a GPU (`StopFlag`)."""
        length = torch.ones_like(loss)
        accepted = torch.zeros_like(loss, dtype=torch.bool)
        new_estimate, new_loss, new_gradient = estimate, loss, gradient
        stop = StopFlag(loss.device, self.check_every)
        for trial_index in range(self.line_search_steps):
            trial = estimate + per_example(length, estimate) * direction
            trial_loss, trial_gradient, _ = loss_and_gradient(problem, trial, y_target, observed)
            good = ~accepted & torch.isfinite(trial_loss) & (trial_loss <= loss + self.armijo * length * slope)
            new_estimate = torch.where(per_example(good, trial), trial, new_estimate)
            new_loss = torch.where(good, trial_loss, new_loss)
            new_gradient = torch.where(per_example(good, trial), trial_gradient, new_gradient)
            accepted = accepted | good
            if stop.should_stop(trial_index + 1, accepted.all):
                break
            length = torch.where(accepted, length, 0.5 * length)
        return new_estimate, new_loss, new_gradient
