"""Inverting the exponential function y = e^x (paper appendix C.2). Values are (B, 1)."""
from __future__ import annotations

import torch


def forward(x: torch.Tensor) -> torch.Tensor:
    """P(x) = e^x, element-wise."""
    return torch.exp(x)


def sample(
    n: int,
    generator: torch.Generator,
    x_range: tuple[float, float] = (-12.0, 0.0),
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground truth x* ~ U[x_range) and its observation y* = e^{x*}, both of shape (n, 1)."""
    low, high = x_range
    unit = torch.rand(n, 1, generator=generator, device=generator.device, dtype=dtype)
    x_true = low + (high - low) * unit
    return x_true, forward(x_true)


def newton_update(
    x: torch.Tensor, y_target: torch.Tensor, clip: float | None = None
) -> torch.Tensor:
    """Newton step on L = 1/2 (e^x - y*)^2 with its sign forced downhill.

    g = (e^x - y*) e^x, h = 2 e^{2x} - y* e^x, dx = |g / h| sign(-g) (0 where h = 0),
    optionally clipped to |dx| <= clip (0.1 in the paper's clipped variant).

    Args:
        x: current estimates, shape (B, 1).
        y_target: observations y* > 0, shape (B, 1).
        clip: largest step magnitude, or None.

    Returns:
        dx, shape (B, 1).
    """
    y = forward(x)
    gradient = (y - y_target) * y
    curvature = 2 * y**2 - y_target * y
    step = torch.where(curvature == 0, 0.0, gradient / curvature).abs()
    if clip is not None:
        step = step.clamp_max(clip)
    return -torch.sign(gradient) * step
