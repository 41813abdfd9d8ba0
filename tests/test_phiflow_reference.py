"""Our pure-torch Poisson, heat and noise kernels against PhiFlow 3.4, the paper's simulator.

Convention (checked by `test_grid_convention_matches_phiflow`, relied on by every other test):
our (B, H, W) tensor is PhiFlow's `CenteredGrid(..., x=W, y=H)` with dimensions (batch, y, x),
i.e. rows are y and columns are x, cells are unit squares, and value [i, j] lives at the cell
centre (x, y) = (j + 1/2, i + 1/2). Grids are non-square (12 x 16) wherever the kernel has
an axis-dependent part, so a swapped axis fails. All physics runs in float64.
"""
from __future__ import annotations

import math as pymath

import phi.field._noise as phi_noise
import pytest
import torch
from phi.torch.flow import CenteredGrid, Noise, Solve, batch, diffuse, extrapolation, field, math, spatial

from sip_train.physics import diffuse as heat
from sip_train.physics import poisson
from sip_train.physics.noise import smooth_noise

F64 = torch.float64
H, W = 12, 16


@pytest.fixture(autouse=True)
def _phiflow_float64():
    """PhiFlow creates its own tensors (frequencies, kernels) in float64 too."""
    with math.precision(64):
        yield


def _random(n: int, resolution: tuple[int, int] = (H, W), seed: int = 0) -> torch.Tensor:
    return torch.randn(n, *resolution, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _grid(values: torch.Tensor, boundary) -> CenteredGrid:
    """The authors' `CenteredGrid(..., x=W, y=H)` of unit cells holding our (B, H, W) values.

    PhiFlow names the axes, but its grids must keep their values in the axis order of their
    geometry, here (x, y) as in the authors' scripts; hence the transpose.
    """
    values = math.tensor(values.transpose(-2, -1), batch("batch"), spatial("x,y"))
    return CenteredGrid(values, boundary, x=values.shape.get_size("x"), y=values.shape.get_size("y"))


def _native(grid: CenteredGrid) -> torch.Tensor:
    """Our (B, H, W) view of a PhiFlow grid."""
    return grid.values.native("batch,y,x")


def _laplacian_condition_number(resolution: tuple[int, int]) -> float:
    """Condition number of the 5-point Dirichlet Laplacian: ratio of its extreme DST-I eigenvalues."""
    def eig(n: int, k: int) -> float:
        return 4 * pymath.sin(pymath.pi * k / (2 * (n + 1))) ** 2

    return (eig(resolution[0], resolution[0]) + eig(resolution[1], resolution[1])) / (
        eig(resolution[0], 1) + eig(resolution[1], 1)
    )


# --- conventions --------------------------------------------------------------------------


def test_grid_convention_matches_phiflow():
    """`_grid(v)` is the grid the authors build with `CenteredGrid(..., x=W, y=H)`: same bounds,
    unit cells, and v[i, j] is the value at the cell centre (x, y) = (j + 1/2, i + 1/2)."""

    def profile(x, y):  # a polynomial (works on PhiFlow and torch tensors) that tells x from y
        return 0.01 * x**3 - 0.1 * y**2 + x * y / 7

    reference = CenteredGrid(lambda p: profile(p.vector["x"], p.vector["y"]), 0, x=W, y=H)
    y_centres = torch.arange(H, dtype=F64)[:, None] + 0.5
    x_centres = torch.arange(W, dtype=F64)[None, :] + 0.5
    ours = _grid(profile(x_centres, y_centres)[None].expand(1, H, W), 0)
    assert ours.bounds == reference.bounds and ours.resolution == reference.resolution
    assert ours.dx.numpy("vector").tolist() == [1.0, 1.0]
    torch.testing.assert_close(_native(ours), reference.values.native("y,x")[None], rtol=0, atol=1e-14)


# --- Poisson ------------------------------------------------------------------------------


def test_laplace_matches_phiflow_zero_extrapolation():
    """5-point stencil, zero values outside the grid (PhiFlow's default boundary 0), unit cells."""
    x = _random(3)
    torch.testing.assert_close(poisson.laplace(x), _native(field.laplace(_grid(x, 0))), rtol=0, atol=1e-12)


def _phiflow_solve(x: torch.Tensor, rel_tol: float) -> CenteredGrid:
    """The paper's solve: `solve_linear(laplace, x, Solve('CG', rel_tol, 0, x0=0))`."""
    grid = _grid(x, 0)
    solve = Solve("CG", rel_tol, 0, x0=grid * 0, gradient_solve=Solve("CG", rel_tol, 0))
    return field.solve_linear(field.laplace, grid, solve)


@pytest.mark.parametrize("rel_tol", [1e-5, 1e-10])
def test_solve_cg_reproduces_phiflow_cg_iterates(rel_tol):
    """Same CG recursion and per-example stopping rule (|r| <= rel_tol |x|, x0 = 0): at the paper's
    tolerance too, our result is PhiFlow's to round-off, not merely to rel_tol."""
    x = smooth_noise(4, (H, W), torch.Generator().manual_seed(0), dtype=F64)
    torch.testing.assert_close(poisson.solve_cg(x, rel_tol), _native(_phiflow_solve(x, rel_tol)), rtol=0, atol=1e-12)


def test_solve_spectral_matches_phiflow_cg():
    """The exact DST-I solve and PhiFlow's CG at rel_tol 1e-10 differ by at most the CG error
    bound ||e|| / ||y|| <= cond(lap) * rel_tol (cond ~ 86 on 12 x 16)."""
    rel_tol = 1e-10
    x = _random(3)
    reference = _native(_phiflow_solve(x, rel_tol))
    error = (poisson.solve_spectral(x) - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
    assert error.max() <= _laplacian_condition_number((H, W)) * rel_tol
    assert error.max() > 0  # the two really are different solvers


def test_solve_cg_gradient_matches_phiflow_implicit_gradient():
    """d/dx sum(w * solve(x)): our implicit backward equals PhiFlow's solve_linear gradient."""
    x, weights = _random(2, seed=1), _random(2, seed=2)
    ours, theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (poisson.solve_cg(ours, 1e-10) * weights).sum().backward()
    (_native(_phiflow_solve(theirs, 1e-10)) * weights).sum().backward()
    torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-12)


# --- heat ---------------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [(H, W), (11, 15)])
def test_fourier_matches_phiflow_periodic_diffusion(resolution):
    """`diffuse.fourier(grid, 8., 1)` on a PERIODIC grid (train_heat.py); frequencies per axis (odd sizes too:
    the half spectrum of the last axis must be transformed back to the right width)."""
    x = _random(3, resolution)
    reference = _native(diffuse.fourier(_grid(x, extrapolation.PERIODIC), 8.0, 1))
    torch.testing.assert_close(heat.fourier(x, 8.0), reference, rtol=0, atol=1e-12)


def _authors_inv_diffuse(residual: CenteredGrid, amount: float, uncertainty: CenteredGrid):
    """tum-pbs/SIP heat/inv_diffuse.py `inv_diffuse` + `apply_damping`, in PhiFlow 3 names
    (divide_no_nan -> safe_div, isfinite -> is_finite). Returns (dx, p_signal).

    As in the original, the overflow clamp only enters `raw_kernel`, whose values are unused,
    so it is left out; the equal priors (0.5) cancel in p_signal and are kept for fidelity.
    """
    f_uncertainty = math.sqrt(math.sum(uncertainty.values**2, dim="x,y"))
    k_squared = math.sum(math.fftfreq(residual.shape, residual.dx) ** 2, "vector")
    log_kernel = (2 * pymath.pi) ** 2 * k_squared * amount
    amp = math.fft(residual.values)
    expected_amp = residual.shape.get_size("x") * math.exp(-log_kernel)
    signal_likelihood = math.exp(-0.5 * (abs(amp) / expected_amp) ** 2) * 0.5
    signal_likelihood = math.where(math.is_finite(signal_likelihood), signal_likelihood, 0.0)
    noise_likelihood = math.exp(-0.5 * (abs(amp) / f_uncertainty) ** 2) * 0.5
    p_signal = math.safe_div(signal_likelihood, signal_likelihood + noise_likelihood)
    action = math.where((0.5 >= p_signal) | (p_signal >= 0.68), 2 * (p_signal - 0.5), 0.0)
    dx = math.real(math.ifft(amp * math.to_complex(math.exp(log_kernel * action))))
    return residual.with_values(dx), p_signal


def _heat_residual(resolution: tuple[int, int]) -> torch.Tensor:
    """r = y* - y for a smooth x* and a prediction off by small-scale noise, as in training."""
    generator = torch.Generator().manual_seed(0)
    x_true = smooth_noise(3, resolution, generator, dtype=F64)
    x = x_true + 0.1 * smooth_noise(3, resolution, generator, scale=3.0, dtype=F64)
    return heat.fourier(x_true, 8.0) - heat.fourier(x, 8.0)


@pytest.mark.parametrize(
    "resolution",
    [
        (16, 16),
        (H, W),
        (13, 15),
    ],
)
def test_inverse_fourier_damped_matches_authors_inv_diffuse(resolution):
    """dx of the heat SIP update equals the authors' inv_diffuse(r, 8., uncertainty=|r| * 1e-6),
    on data that exercises all three branches (amplify, damp, and the 0.5 < p < 0.68 dead band)."""
    residual = _heat_residual(resolution)
    grid = _grid(residual, extrapolation.PERIODIC)
    reference, p_signal = _authors_inv_diffuse(grid, 8.0, abs(grid) * 1e-6)
    p_signal = p_signal.native("batch,y,x")
    assert (p_signal >= 0.68).any() and (p_signal <= 0.5).any() and ((p_signal > 0.5) & (p_signal < 0.68)).any()
    ours = heat.inverse_fourier_damped(residual, 8.0, relative_noise=1e-6)
    torch.testing.assert_close(ours, _native(reference), rtol=0, atol=1e-10)


# --- noise --------------------------------------------------------------------------------


def _phiflow_noise(n: int, resolution: tuple[int, int], scale: float) -> torch.Tensor:
    """The paper's `CenteredGrid(Noise(batch(batch=n), scale=scale), x=W, y=H)` as (n, H, W)."""
    grid = CenteredGrid(Noise(batch(batch=n), scale=scale), x=resolution[1], y=resolution[0])
    return _native(grid)


def _noise_with_shared_draws(monkeypatch, n: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(ours, PhiFlow's) noise built from the same normal draws: PhiFlow's two `random_normal`
    calls (real, then imaginary part) are fed the (n, H, W) draws our generator makes, by name."""
    ours = smooth_noise(n, (H, W), torch.Generator().manual_seed(3), scale=scale, dtype=F64)
    generator = torch.Generator().manual_seed(3)

    def shared_draws(shape):
        return math.tensor(torch.randn(n, H, W, generator=generator, dtype=F64), batch("batch"), spatial("y,x"))

    monkeypatch.setattr(phi_noise, "random_normal", shared_draws)
    return ours, _phiflow_noise(n, (H, W), scale)


@pytest.mark.parametrize("scale", [10.0, 4.0])
def test_smooth_noise_same_recipe_as_phiflow(monkeypatch, scale):
    """Given the same Fourier coefficients, both weight them identically: 1/k^2 with
    k = j * scale / N per axis, and the same modes removed (k^2 <= 0.1: at scale 4 on 12 x 16,
    the x-frequencies +-1 only, so a swapped axis fails). Compared up to each field's own scale;
    the scale itself is checked in test_smooth_noise_unit_std_as_phiflow."""
    ours, reference = _noise_with_shared_draws(monkeypatch, 4, scale)
    ours = ours / ours.std(dim=(1, 2), keepdim=True, correction=0)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)


def test_smooth_noise_unit_std_as_phiflow(monkeypatch):
    """Both produce zero-mean fields with (population) std 1, PhiFlow's `math.std` convention."""
    ours, reference = _noise_with_shared_draws(monkeypatch, 4, 10.0)
    for fields in (reference, ours):
        torch.testing.assert_close(fields.mean(dim=(1, 2)), torch.zeros(4, dtype=F64), rtol=0, atol=1e-12)
        torch.testing.assert_close(fields.std(dim=(1, 2), correction=0), torch.ones(4, dtype=F64), rtol=0, atol=1e-12)


def _radial_power(fields: torch.Tensor) -> torch.Tensor:
    """Mean power spectrum over examples, summed in rings of integer |j|, normalised to sum 1."""
    jy = torch.fft.fftfreq(fields.shape[-2], 1 / fields.shape[-2], dtype=F64)
    jx = torch.fft.fftfreq(fields.shape[-1], 1 / fields.shape[-1], dtype=F64)
    ring = torch.sqrt(jy[:, None] ** 2 + jx[None, :] ** 2).round().long().flatten()
    power = (torch.fft.fft2(fields).abs() ** 2).mean(0).flatten()
    rings = torch.zeros(int(ring.max()) + 1, dtype=F64).index_add_(0, ring, power)
    return rings / rings.sum()


def test_smooth_noise_power_spectrum_matches_phiflow():
    """Independent draws (1000 fields each, 16 x 16, scale 4): the radially averaged power
    spectra agree within 10 % per ring (sampling error here is <= 4 %; smoothness 0.8 instead
    of 1 is off by >= 20 % in most rings), and both are zero-mean per field."""
    n, resolution = 1000, (16, 16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # PhiFlow draws from torch's global generator
        reference = _phiflow_noise(n, resolution, 4.0)
    ours = smooth_noise(n, resolution, torch.Generator().manual_seed(1), scale=4.0, dtype=F64)
    for fields in (reference, ours):
        assert fields.mean(dim=(1, 2)).abs().max() < 1e-12
    ours_power, reference_power = _radial_power(ours), _radial_power(reference)
    assert ours_power[0] < 1e-20 and reference_power[0] < 1e-20  # the mean is removed
    torch.testing.assert_close(ours_power[1:], reference_power[1:], rtol=0.1, atol=0)
