"""Batched conjugate gradient with per-example step sizes, residuals and stopping."""
from __future__ import annotations

from typing import Callable

import torch

from sip_train.convergence import StopFlag


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-example inner product, (B, ...) x2 -> (B,)."""
    return (a * b).flatten(1).sum(1)


def per_example(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1), broadcastable against `like`."""
    return value.reshape(-1, *(1,) * (like.dim() - 1))


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iterations: int, rel_tol: float,
    check_every: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve A_i x_i = b_i for every example i of a batch from x = 0, A symmetric positive definite.

    Each example has its own step sizes and stops at ||r_i|| <= rel_tol ||b_i|| (or at a direction of
    non-positive curvature): from then on its iterate is frozen by masks. The loop ends early once the host
    learns that all examples have stopped (`StopFlag`: checked every `check_every` iterations, never waiting
    for a GPU).

    Args:
        matvec: v (B, ...) -> A v, example-wise (block-diagonal A).
        b: right-hand sides (B, ...).
        iterations: the budget of matrix-vector products.
        rel_tol: relative residual at which an example stops.
        check_every: iterations between checks of the convergence flags.

    Returns:
        The solutions (B, ...) and the iterations each example used (B,) int64.
    """
    x = torch.zeros_like(b)
    residual = b.clone()
    direction = residual.clone()
    rr = batch_dot(residual, residual)
    threshold = rel_tol**2 * rr
    active = rr > threshold
    used = torch.zeros(len(b), dtype=torch.int64, device=b.device)
    tiny = torch.finfo(b.dtype).tiny
    stop = StopFlag(b.device, check_every)
    for iteration in range(iterations):
        if stop.should_stop(iteration, lambda: ~active.any()):
            break
        product = matvec(direction)
        curvature = batch_dot(direction, product)
        active = active & (curvature > 0)
        alpha = torch.where(active, rr / curvature.clamp_min(tiny), 0.0)
        x = x + per_example(alpha, x) * direction
        residual = residual - per_example(alpha, x) * product
        rr_new = batch_dot(residual, residual)
        beta = torch.where(active, rr_new / rr.clamp_min(tiny), 0.0)
        direction = residual + per_example(beta, x) * direction
        used = used + active.long()
        rr = torch.where(active, rr_new, rr)
        active = active & (rr > threshold)
    return x, used
