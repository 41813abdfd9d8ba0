"""Fourier neural operator and wave-packet network: paper sizes, shapes, grid independence, errors, training."""
from __future__ import annotations

import math

import pytest
import torch

from sip_train.networks.conv1d import Conv1dNet
from sip_train.networks.fno import FNO, SpectralConv2d

T0_RANGE = (25.6, 128.0)


def band_limited_field(coefficients: torch.Tensor, n: int) -> torch.Tensor:
    """Periodic field sum_k c_k exp(i k.r), |k_y|, |k_x| <= 3, on an n x n grid; coefficients (B, C, 7, 7) complex."""
    k = torch.arange(-3, 4, dtype=coefficients.real.dtype)
    r = torch.arange(n, dtype=k.dtype) * 2 * math.pi / n
    wave = torch.exp(1j * torch.outer(r, k))
    return torch.einsum("bcpq,yp,xq->bcyx", coefficients, wave, wave).real


def parameter_count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())


def adam_losses(network: torch.nn.Module, y: torch.Tensor, x: torch.Tensor, steps: int, lr: float) -> list[float]:
    """Trains `network` to map y to x on mean squared error, returning the loss before each step."""
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.mean((network(y) - x) ** 2)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_fno_default_has_paper_parameter_count():
    assert parameter_count(FNO((1, 64, 64), (1, 64, 64))) == 1_188_353


@pytest.mark.parametrize("resolution, modes, padding", [(32, 16, 0), (16, 8, 0), (16, 4, 9)])
def test_fno_output_shape(resolution, modes, padding):
    torch.manual_seed(0)
    network = FNO((2, resolution, resolution), (3, resolution, resolution), modes=modes, padding=padding)
    x = network(torch.randn(4, 2, resolution, resolution))
    assert x.shape == (4, 3, resolution, resolution)
    assert torch.isfinite(x).all()


def test_fno_same_weights_run_on_other_grids():
    torch.manual_seed(0)
    network = FNO((1, 32, 32), (1, 32, 32), width=8, modes=4)
    for height, width in [(32, 32), (16, 16), (24, 40)]:
        assert network(torch.randn(2, 1, height, width)).shape == (2, 1, height, width)


def test_spectral_conv_is_the_same_operator_on_any_grid():
    """On a band-limited periodic field, the 32x32 output sampled at every second point is the 16x16 output."""
    torch.manual_seed(0)
    layer = SpectralConv2d(channels=3, modes=8).double()
    coefficients = torch.randn(2, 3, 7, 7, dtype=torch.complex128)
    fine, coarse = layer(band_limited_field(coefficients, 32)), layer(band_limited_field(coefficients, 16))
    assert fine.abs().max() > 1e-3
    torch.testing.assert_close(fine[..., ::2, ::2], coarse, rtol=1e-10, atol=1e-12)


def test_fno_double_precision_matches_single():
    torch.manual_seed(0)
    network = FNO((1, 16, 16), (1, 16, 16), width=8, modes=4)
    y = torch.randn(2, 1, 16, 16)
    single = network(y)
    double = network.double()(y.double())
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), single, rtol=1e-4, atol=1e-5)


def test_fno_rejects_too_many_modes():
    with pytest.raises(ValueError, match=r"network\.modes=40 is too many for problem\.resolution=32: at most 16"):
        FNO((1, 32, 32), (1, 32, 32), modes=40)
    network = FNO((1, 32, 32), (1, 32, 32), modes=12)
    with pytest.raises(ValueError, match=r"network\.modes=12 is too many for problem\.resolution=16: at most 8"):
        network(torch.randn(1, 1, 16, 16))


@pytest.mark.parametrize("in_shape, out_shape", [((2,), (2,)), ((1, 256), (1,)), ((1, 32, 32), (1, 16, 16))])
def test_fno_rejects_shapes_that_are_not_fields_on_one_grid(in_shape, out_shape):
    with pytest.raises(ValueError, match="network=fno"):
        FNO(in_shape, out_shape)


def test_conv1d_output_shape_and_range():
    torch.manual_seed(0)
    network = Conv1dNet((1, 256), (1,), output_range=T0_RANGE)
    for scale in (1.0, 1e4, -1e4):
        t0 = network(scale * torch.randn(8, 1, 256))
        assert t0.shape == (8, 1)
        assert ((t0 >= T0_RANGE[0]) & (t0 <= T0_RANGE[1])).all()


def test_conv1d_zero_logit_is_the_centre_of_the_range():
    network = Conv1dNet((1, 256), (1,), output_range=T0_RANGE)
    last = network.dense.layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    t0 = network(torch.randn(3, 1, 256))
    torch.testing.assert_close(t0, torch.full((3, 1), 76.8))


@pytest.mark.parametrize(
    "in_shape, hyperparameters, key",
    [
        ((1, 32, 32), {}, "network=conv1d"),
        ((1, 16), {"blocks": 5}, "network.blocks=5"),
        ((1, 256), {"output_range": (128.0, 25.6)}, "network.output_range"),
    ],
)
def test_conv1d_rejects_bad_configuration(in_shape, hyperparameters, key):
    with pytest.raises(ValueError, match=key):
        Conv1dNet(in_shape, (1,), **{"output_range": T0_RANGE, **hyperparameters})


def test_fno_adam_fits_a_periodic_shift():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    y = band_limited_field(torch.randn(8, 1, 7, 7, dtype=torch.complex64, generator=generator), 16)
    x = torch.roll(y, shifts=(1, 2), dims=(-2, -1))
    losses = adam_losses(FNO((1, 16, 16), (1, 16, 16), width=8, modes=4), y, x, steps=40, lr=3e-3)
    assert losses[-1] < 0.2 * losses[0]


def test_conv1d_adam_learns_where_a_bump_is():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    t0 = T0_RANGE[0] + (T0_RANGE[1] - T0_RANGE[0]) * torch.rand(32, 1, generator=generator)
    t = torch.arange(256.0)
    y = torch.exp(-((t - t0) ** 2) / (2 * 20.0**2)).unsqueeze(1)
    losses = adam_losses(Conv1dNet((1, 256), (1,), output_range=T0_RANGE), y, t0, steps=60, lr=3e-3)
    assert losses[-1] < 0.2 * losses[0]
