"""Random smooth fields: the torch counterpart of PhiFlow's `Noise` initializer."""
from __future__ import annotations

import torch


def smooth_noise(
    n: int,
    resolution: tuple[int, ...],
    generator: torch.Generator,
    scale: float = 10.0,
    smoothness: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Periodic random fluctuations with a 1/k^(2 smoothness) power spectrum.

    Same recipe as PhiFlow 3's `Noise(scale, smoothness)` on a grid of unit cells: complex
    normal Fourier coefficients weighted by (1/k^2)^smoothness with k = j * scale / N
    (j the integer frequency, N the cells along that axis), modes with k^2 <= 0.1 removed,
    then normalised per example to unit standard deviation and zero mean.

    Args:
        n: number of examples.
        resolution: spatial cells per axis, e.g. (64, 64).
        generator: random source; the result lives on `generator.device`.
        scale: size of the fluctuations in cells (larger = smoother).
        smoothness: spectral decay exponent.
        dtype: real dtype of the result.

    Returns:
        Tensor of shape (n, *resolution).
    """
    device = generator.device
    complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
    shape = (n, *resolution)
    coefficients = torch.complex(
        torch.randn(shape, generator=generator, device=device, dtype=dtype),
        torch.randn(shape, generator=generator, device=device, dtype=dtype),
    ).to(complex_dtype)
    k2 = torch.zeros(resolution, device=device, dtype=dtype)
    for axis, cells in enumerate(resolution):
        k = torch.fft.fftfreq(cells, device=device, dtype=dtype) * scale
        k2 = k2 + k.view([-1 if a == axis else 1 for a in range(len(resolution))]) ** 2
    weight = torch.where(k2 > 0.1, 1 / k2.clamp_min(1e-12), torch.zeros_like(k2)) ** smoothness
    dims = tuple(range(1, len(shape)))
    field = torch.fft.ifftn(coefficients * weight, dim=dims).real
    field = field / field.std(dim=dims, keepdim=True, correction=0)
    return field - field.mean(dim=dims, keepdim=True)
