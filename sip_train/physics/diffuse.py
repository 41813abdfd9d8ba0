"""Diffusion (the heat equation) on a periodic grid of unit cells, solved in Fourier space.

The fields are real, so their spectra are Hermitian: the kernels transform with rfft2 (half the
frequencies of the last axis) and use factors built once per grid, amount, dtype and device.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from sip_train.physics.cache import device_constants


def log_decay(resolution: tuple[int, int], amount: float, dtype: torch.dtype, device: torch.device,
              one_sided: bool = False) -> torch.Tensor:
    """log of the diffusion damping per frequency: (2 pi)^2 |f|^2 * amount, f = fftfreq per axis.

    `amount` is diffusivity times duration (nu * t) in cell units; shape (H, W), or (H, W // 2 + 1) with
    `one_sided` (the frequencies of rfft2).
    """
    fy = torch.fft.fftfreq(resolution[0], dtype=dtype, device=device)
    fx = (torch.fft.rfftfreq if one_sided else torch.fft.fftfreq)(resolution[1], dtype=dtype, device=device)
    return (2 * math.pi) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2) * amount


class _Spectrum(NamedTuple):
    """Per-frequency factors of one grid and amount, on the rfft2 frequencies."""

    damping: torch.Tensor  # exp(-log_k): what diffusion leaves of each frequency
    log_k: torch.Tensor  # log_k, clamped below float32's overflow (the largest amplification allowed)
    signal_amplitude: torch.Tensor  # N exp(-log_k): the SIP update's prior amplitude of the signal


@device_constants
def _spectrum(resolution: tuple[int, int], amount: float, dtype: torch.dtype, device: torch.device) -> _Spectrum:
    log_k = log_decay(resolution, amount, dtype, device, one_sided=True)
    clamped = log_k.clamp(max=math.floor(math.log(torch.finfo(torch.float32).max)))
    return _Spectrum(torch.exp(-log_k), clamped, resolution[1] * torch.exp(-clamped))  # N = cells along x, as the authors


def fourier(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Exact periodic diffusion of x (..., H, W): y^ = x^ * exp(-k^2 * amount), k = 2 pi f."""
    resolution = tuple(x.shape[-2:])
    damping = _spectrum(resolution, float(amount), x.dtype, x.device).damping
    return torch.fft.irfft2(torch.fft.rfft2(x) * damping, s=resolution)


def inverse_fourier_damped(residual: torch.Tensor, amount: float, relative_noise: float = 1e-6) -> torch.Tensor:
    """Bayesian-damped inverse diffusion of a residual r = y* - y (..., H, W), the heat SIP update.

    Each frequency R of r is judged signal or noise: the signal prior has amplitude
    N exp(-log_k) (what diffusion leaves of an O(1) x), the noise amplitude is
    sqrt(sum (relative_noise * |r|)^2). Where the signal probability p is at least 0.68 the
    frequency is amplified by exp(log_k * 2 (p - 1/2)); where p <= 1/2 it is damped
    (exponent <= 0), so noise-only frequencies are never amplified. Returns dx (..., H, W).
    """
    resolution = tuple(residual.shape[-2:])
    factors = _spectrum(resolution, float(amount), residual.dtype, residual.device)
    spectrum = torch.fft.rfft2(residual)
    amplitude = spectrum.abs()
    noise_amplitude = torch.sqrt(((relative_noise * residual.abs()) ** 2).sum(dim=(-2, -1), keepdim=True))
    signal_likelihood = torch.exp(-0.5 * (amplitude / factors.signal_amplitude) ** 2)
    noise_likelihood = torch.exp(-0.5 * (amplitude / noise_amplitude) ** 2)
    p_signal = torch.nan_to_num(signal_likelihood / (signal_likelihood + noise_likelihood), nan=0.0)
    confident = (p_signal <= 0.5) | (p_signal >= 0.68)
    action = torch.where(confident, 2 * (p_signal - 0.5), torch.zeros_like(p_signal))
    return torch.fft.irfft2(spectrum * torch.exp(factors.log_k * action), s=resolution)
