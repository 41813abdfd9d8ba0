"""Wave packet localisation: find the offset t0 of a noisy wave packet (paper appendix C.1).

The packet y(t) = A sin(f (t - t0)) exp(-(t - t0)^2 / (2 sigma^2)) is sampled at t = 0..255
(time in samples). Offsets are (B, 1), time series are (B, 1, T) with one channel.
"""
from __future__ import annotations

import numpy as np
import scipy.optimize
import torch

SAMPLES = 256


def forward(
    t0: torch.Tensor,
    t: torch.Tensor | None = None,
    amplitude: float = 1.0,
    frequency: float = 0.7,
    sigma: float = 20.0,
) -> torch.Tensor:
    """y(t) = A sin(f (t - t0)) exp(-(t - t0)^2 / (2 sigma^2)).

    Args:
        t0: packet centres, shape (B, 1), in samples.
        t: sample times, shape (T,); default 0, 1, ..., 255.
        amplitude: A.
        frequency: f in radians per sample.
        sigma: envelope width in samples.

    Returns:
        Time series, shape (B, 1, T).
    """
    if t is None:
        t = torch.arange(SAMPLES, dtype=t0.dtype, device=t0.device)
    shift = t - t0[:, :, None]
    return amplitude * torch.sin(frequency * shift) * torch.exp(-0.5 * (shift / sigma) ** 2)


def sample(
    n: int,
    generator: torch.Generator,
    noise: float = 0.1,
    t0_range: tuple[float, float] = (25.6, 128.0),
    dtype: torch.dtype = torch.float32,
    **packet: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets t0 ~ U[t0_range) and their packets plus Gaussian noise of std `noise`.

    Args:
        n: number of examples.
        generator: random source; the result lives on `generator.device`.
        noise: standard deviation of the additive noise.
        t0_range: (low, high) of the uniform offset distribution, in samples.
        dtype: floating dtype of the result.
        **packet: amplitude, frequency, sigma passed to `forward`.

    Returns:
        t0 of shape (n, 1) and y* of shape (n, 1, 256).
    """
    low, high = t0_range
    device = generator.device
    t0 = low + (high - low) * torch.rand(n, 1, generator=generator, device=device, dtype=dtype)
    clean = forward(t0, **packet)
    fluctuations = torch.randn(clean.shape, generator=generator, device=device, dtype=dtype)
    return t0, clean + noise * fluctuations


def fit_lbfgsb(
    y_target: torch.Tensor,
    t0_init: float = 76.8,
    t0_range: tuple[float, float] = (25.6, 128.0),
    max_iter: int = 1000,
    reduction: str = "mean",
    **packet: float,
) -> torch.Tensor:
    """Per-example L-BFGS-B fit of t0 minimising the mean (or sum) of the squared error of y(t0) - y*.

    Each example is fitted separately in float64 from the same initial guess, within the
    bounds `t0_range`, with the gradient from torch autograd through `forward`. The mean
    (appendix C.1: "least mean squared error") has the minimiser of ||y(t0) - y*||^2 but a
    256x smaller gradient, which matters: on a bounded problem L-BFGS-B's first trial step
    is the full negative gradient, and with the sum it jumps several periods of the packet.

    Args:
        y_target: observed series, shape (B, 1, T).
        t0_init: initial guess for every example (the centre of the range in the paper).
        t0_range: bounds of t0.
        max_iter: L-BFGS-B iteration limit per example.
        reduction: "mean" over the samples (the default) or "sum" (the paper's ||y(t0) - y*||^2): the same
            minimisers, a different first step, so a different baseline.
        **packet: amplitude, frequency, sigma passed to `forward`.

    Returns:
        Fitted t0, shape (B, 1), dtype and device of `y_target`.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction={reduction!r} is invalid: choose mean or sum")
    targets = y_target.detach().to("cpu", torch.float64)
    t = torch.arange(targets.shape[-1], dtype=torch.float64)
    fitted = []
    for target in targets:

        def loss_and_gradient(t0: np.ndarray) -> tuple[float, np.ndarray]:
            t0_tensor = torch.tensor(t0, dtype=torch.float64, requires_grad=True)
            squares = (forward(t0_tensor[None, :], t, **packet)[0] - target) ** 2
            loss = squares.mean() if reduction == "mean" else squares.sum()
            loss.backward()
            return loss.item(), t0_tensor.grad.numpy()

        result = scipy.optimize.minimize(
            loss_and_gradient,
            np.array([t0_init]),
            jac=True,
            method="L-BFGS-B",
            bounds=[t0_range],
            options={"maxiter": max_iter},
        )
        fitted.append(result.x)
    return torch.tensor(np.stack(fitted), dtype=y_target.dtype, device=y_target.device)
