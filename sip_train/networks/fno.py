"""Fourier neural operator (Li et al. 2021, "FNO2d"): lift, Fourier layers, project."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def check_modes(modes: int, height: int, width: int, padding: int) -> None:
    """Raises ValueError unless `modes` low frequencies per sign fit the (padded) grid without overlapping."""
    limit = min(height, width) + padding
    if modes > limit // 2:
        grid = height if height == width else f"{height}x{width}"
        with_padding = f" with network.padding={padding}" if padding else ""
        raise ValueError(
            f"network.modes={modes} is too many for problem.resolution={grid}{with_padding}: at most {limit // 2}"
        )


class SpectralConv2d(nn.Module):
    """Global convolution as a product in Fourier space, v^(k) = R(k) u^(k), on the lowest frequencies only.

    Keeps |k_y| < modes (both signs) and 0 <= k_x < modes of the real FFT of (B, C, H, W) and zeroes the rest,
    so one set of weights R (C_in, C_out, 2 * modes, modes), complex, acts the same on every grid.
    """

    def __init__(self, channels: int, modes: int) -> None:
        super().__init__()
        self.modes = modes
        self.weights = nn.Parameter(torch.rand(channels, channels, 2 * modes, modes, dtype=torch.cfloat) / channels**2)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        m = self.modes
        u_hat = torch.fft.rfft2(u)
        low = torch.cat([u_hat[..., :m, :m], u_hat[..., -m:, :m]], dim=-2)
        # Module.double() leaves complex parameters complex64: match the input's precision here.
        product = torch.einsum("bixy,ioxy->boxy", low, self.weights.to(u_hat.dtype))
        v_hat = u_hat.new_zeros(u.shape[0], self.weights.shape[1], *u_hat.shape[-2:])
        v_hat[..., :m, :m] = product[..., :m, :]
        v_hat[..., -m:, :m] = product[..., m:, :]
        return torch.fft.irfft2(v_hat, s=u.shape[-2:])


def grid_coordinates(like: torch.Tensor) -> torch.Tensor:
    """Cell coordinates in [0, 1] along y (rows) and x (columns) as two channels, (B, 2, H, W)."""
    batch, _, height, width = like.shape
    y = torch.linspace(0, 1, height, dtype=like.dtype, device=like.device)
    x = torch.linspace(0, 1, width, dtype=like.dtype, device=like.device)
    return torch.stack(torch.meshgrid(y, x, indexing="ij")).expand(batch, -1, -1, -1)


class FNO(nn.Module):
    """2D Fourier neural operator (B, C, H, W) -> (B, C', H, W), as the FNO authors' `fourier_2d.py`.

    Each Fourier layer is u <- GELU(K u + W u), K spectral, W a 1x1 convolution (no GELU after the last).
    The input is lifted with its two grid-coordinate channels to `width` maps and projected through 128
    maps. With width=32, modes=12, layers=4 and one channel in and out it has the paper's 1,188,353
    parameters (each complex Fourier weight counted once). Any grid with at least 2 * modes points per
    axis works with the same weights; `padding` zero-pads bottom/right for non-periodic fields.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        width: int = 32,
        modes: int = 12,
        layers: int = 4,
        padding: int = 0,
    ) -> None:
        super().__init__()
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise ValueError(
                f"network=fno needs 2D fields shaped (channels, H, W); this problem has "
                f"input {tuple(in_shape)} and output {tuple(out_shape)}: choose network=mlp"
            )
        if tuple(in_shape[1:]) != tuple(out_shape[1:]):
            raise ValueError(
                f"network=fno maps a field to a field on the same grid; this problem has "
                f"input {tuple(in_shape)} and output {tuple(out_shape)}"
            )
        limits = (("width", width, 1), ("modes", modes, 1), ("layers", layers, 1), ("padding", padding, 0))
        for key, value, minimum in limits:
            if value < minimum:
                raise ValueError(f"network.{key}={value} is invalid: must be at least {minimum}")
        check_modes(modes, *in_shape[1:], padding)
        self.padding = padding
        self.lift = nn.Conv2d(in_shape[0] + 2, width, kernel_size=1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, kernel_size=1) for _ in range(layers))
        self.project = nn.Sequential(
            nn.Conv2d(width, 128, kernel_size=1), nn.GELU(), nn.Conv2d(128, out_shape[0], kernel_size=1)
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        height, width = y.shape[-2:]
        check_modes(self.spectral[0].modes, height, width, self.padding)
        h = self.lift(torch.cat([y, grid_coordinates(y)], dim=1))
        h = F.pad(h, [0, self.padding, 0, self.padding])
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            h = spectral(h) + pointwise(h)
            if i < len(self.spectral) - 1:
                h = F.gelu(h)
        return self.project(h[..., :height, :width])
