"""Poisson and heat kernels against analytic solutions and finite differences."""
from __future__ import annotations

import math

import pytest
import torch

from sip_train.physics import diffuse, poisson
from sip_train.problems.heat import Heat, hot_rectangles
from sip_train.problems.poisson import Poisson


def eigenfunction(height: int, width: int, ky: int, kx: int) -> tuple[torch.Tensor, float]:
    """A Laplacian eigenfunction with zero boundaries, sin(pi ky i/(H+1)) sin(pi kx j/(W+1)), and its eigenvalue."""
    i = torch.arange(1, height + 1, dtype=torch.float64)[:, None]
    j = torch.arange(1, width + 1, dtype=torch.float64)[None, :]
    mode = torch.sin(math.pi * ky * i / (height + 1)) * torch.sin(math.pi * kx * j / (width + 1))
    eigenvalue = -4 * math.sin(math.pi * ky / (2 * (height + 1))) ** 2 - 4 * math.sin(math.pi * kx / (2 * (width + 1))) ** 2
    return mode, eigenvalue


@pytest.mark.parametrize("solve", [poisson.solve_spectral, lambda x: poisson.solve_cg(x, rel_tol=1e-12)])
@pytest.mark.parametrize("ky,kx", [(1, 1), (3, 2), (7, 11)])
def test_poisson_solve_of_an_eigenfunction_divides_by_its_eigenvalue(solve, ky, kx):
    mode, eigenvalue = eigenfunction(16, 12, ky, kx)
    assert torch.allclose(poisson.laplace(mode), eigenvalue * mode, atol=1e-12)
    assert torch.allclose(solve(mode[None, None]), mode / eigenvalue, atol=1e-9)


def test_spectral_and_cg_solves_agree_on_random_sources():
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectral = poisson.solve_spectral(x)
    assert torch.allclose(poisson.laplace(spectral), x, atol=1e-10)
    assert torch.allclose(poisson.solve_cg(x, rel_tol=1e-12), spectral, atol=1e-9)


@pytest.mark.parametrize("ky,kx", [(0, 1), (2, 3), (5, 0)])
def test_heat_kernel_damps_a_fourier_mode_by_exp_minus_k2_times_8(ky, kx):
    n = 16
    i = torch.arange(n, dtype=torch.float64)
    mode = torch.cos(2 * math.pi * (ky * i[:, None] + kx * i[None, :]) / n)
    k2 = (2 * math.pi / n) ** 2 * (ky**2 + kx**2)
    assert torch.allclose(diffuse.fourier(mode, 8.0), mode * math.exp(-k2 * 8.0), atol=1e-14)


@pytest.mark.parametrize("physics", [poisson.solve_spectral, lambda x: poisson.solve_cg(x, rel_tol=1e-12), lambda x: diffuse.fourier(x, 8.0)],
                         ids=["poisson-spectral", "poisson-cg", "heat"])
def test_gradients_through_the_physics_match_finite_differences(physics):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    y_target = torch.randn(2, 1, 6, 6, dtype=torch.float64, generator=generator)
    assert torch.autograd.gradcheck(lambda x: 0.5 * (physics(x) - y_target).pow(2).sum(), (x,), eps=1e-6, atol=1e-6)


def test_poisson_sip_update_recovers_the_true_solution_in_one_step():
    problem = Poisson(resolution=16)
    x_true, y_target = problem.sample(4, torch.Generator().manual_seed(2))
    x = torch.randn_like(x_true)
    dx = problem.inverse_update(x, problem.simulate(x), y_target)
    assert torch.allclose(x + dx, x_true, atol=1e-4 * x_true.abs().max())


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e3])
def test_heat_sip_update_never_amplifies_frequencies_where_noise_outweighs_the_signal_prior(scale):
    """Where the expected signal amplitude N exp(-k^2 8) is below the noise amplitude, p_signal < 1/2
    for any residual, so the update may only damp that frequency, never amplify it."""
    n, amount, relative_noise = 32, 8.0, 1e-6
    residual = scale * torch.randn(4, 1, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    spectrum = torch.fft.fft2(residual).abs()
    update_spectrum = torch.fft.fft2(diffuse.inverse_fourier_damped(residual, amount, relative_noise)).abs()
    signal_amplitude = n * torch.exp(-diffuse.log_decay((n, n), amount, torch.float64, residual.device))
    noise_amplitude = relative_noise * residual.pow(2).sum(dim=(-2, -1), keepdim=True).sqrt()
    noise_only = (signal_amplitude < noise_amplitude).expand_as(spectrum)
    assert noise_only.float().mean() > 0.3
    assert (update_spectrum[noise_only] <= spectrum[noise_only] * (1 + 1e-9)).all()
    assert (update_spectrum[noise_only] < 1e-3 * spectrum[noise_only]).float().mean() > 0.5  # mostly damped hard


def test_heat_sip_update_moves_a_prediction_towards_the_truth():
    problem = Heat(resolution=32)
    x_true, y_target = problem.sample(4, torch.Generator().manual_seed(3))
    x = torch.zeros_like(x_true) + x_true.mean(dim=(-2, -1), keepdim=True)
    dx = problem.inverse_update(x, problem.simulate(x), y_target)
    gradient_direction = diffuse.fourier(y_target - problem.simulate(x), 8.0)
    best_gradient_step = min((x + a * gradient_direction - x_true).abs().sum() for a in (0.5, 1, 2, 4, 8, 16))
    assert (x + dx - x_true).abs().sum() < 0.7 * (x - x_true).abs().sum()
    assert (x + dx - x_true).abs().sum() < best_gradient_step


def test_hot_rectangles_match_the_paper_generator():
    x = hot_rectangles(64, 64, torch.Generator().manual_seed(5))
    assert x.shape == (64, 1, 64, 64) and x.dtype == torch.float64
    assert x.min() >= 0 and x.max() <= 10
    assert (x.flatten(1).amax(1) > 0).all()
    border = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1)], 1)
    assert border.abs().max() <= x.abs().max()  # boxes are clipped into the domain


def test_heat_prediction_is_mean_corrected():
    problem = Heat(resolution=16)
    _, y_target = problem.sample(3, torch.Generator().manual_seed(6))
    x = problem.prepare_prediction(torch.randn(3, 1, 16, 16), y_target)
    assert torch.allclose(x.mean(dim=(-2, -1)), y_target.mean(dim=(-2, -1)))
