"""Diffusion (the heat equation) on a periodic grid of unit cells, solved in Fourier space."""
from __future__ import annotations

import math

import torch


def log_decay(resolution: tuple[int, int], amount: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """log of the diffusion damping per frequency: (2 pi)^2 |f|^2 * amount, f = fftfreq per axis.

    `amount` is diffusivity times duration (nu * t) in cell units; shape (H, W).
    """
    fy = torch.fft.fftfreq(resolution[0], dtype=dtype, device=device)
    fx = torch.fft.fftfreq(resolution[1], dtype=dtype, device=device)
    return (2 * math.pi) ** 2 * (fy[:, None] ** 2 + fx[None, :] ** 2) * amount


def fourier(x: torch.Tensor, amount: float) -> torch.Tensor:
    """Exact periodic diffusion of x (..., H, W): y^ = x^ * exp(-k^2 * amount), k = 2 pi f."""
    damping = torch.exp(-log_decay(x.shape[-2:], amount, x.dtype, x.device))
    return torch.fft.ifft2(torch.fft.fft2(x) * damping).real


def inverse_fourier_damped(residual: torch.Tensor, amount: float, relative_noise: float = 1e-6) -> torch.Tensor:
    """Bayesian-damped inverse diffusion of a residual r = y* - y (..., H, W), the heat SIP update.

    Each frequency R of r is judged signal or noise: the signal prior has amplitude
    N exp(-log_k) (what diffusion leaves of an O(1) x), the noise amplitude is
    sqrt(sum (relative_noise * |r|)^2). Where the signal probability p is at least 0.68 the
    frequency is amplified by exp(log_k * 2 (p - 1/2)); where p <= 1/2 it is damped
    (exponent <= 0), so noise-only frequencies are never amplified. Returns dx (..., H, W).
    """
    resolution = residual.shape[-2:]
    log_k = log_decay(resolution, amount, residual.dtype, residual.device)
    log_k = log_k.clamp(max=math.floor(math.log(torch.finfo(torch.float32).max)))
    spectrum = torch.fft.fft2(residual)
    amplitude = spectrum.abs()
    signal_amplitude = resolution[1] * torch.exp(-log_k)  # N = cells along x, as the authors
    noise_amplitude = torch.sqrt(((relative_noise * residual.abs()) ** 2).sum(dim=(-2, -1), keepdim=True))
    signal_likelihood = torch.exp(-0.5 * (amplitude / signal_amplitude) ** 2)
    noise_likelihood = torch.exp(-0.5 * (amplitude / noise_amplitude) ** 2)
    p_signal = torch.nan_to_num(signal_likelihood / (signal_likelihood + noise_likelihood), nan=0.0)
    confident = (p_signal <= 0.5) | (p_signal >= 0.68)
    action = torch.where(confident, 2 * (p_signal - 0.5), torch.zeros_like(p_signal))
    return torch.fft.ifft2(spectrum * torch.exp(log_k * action)).real
