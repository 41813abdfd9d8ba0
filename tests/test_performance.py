"""What the performance work (issue 15) must not change: the CG solve without host reads per iteration."""
from __future__ import annotations

import torch

from sip_train.physics import poisson
from sip_train.physics.noise import smooth_noise


def _fields(n: int, seed: int = 0) -> torch.Tensor:
    return smooth_noise(n, (16, 12), torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_cg_checked_every_k_iterations_gives_the_per_iteration_result():
    """Finished examples are masked on the device, so checking for the end only every k iterations
    (as on a GPU) changes no iterate: same result as checking every iteration, to the last bit."""
    x = _fields(5) * torch.logspace(-3, 3, 5, dtype=torch.float64)[:, None, None]  # examples finish at different times
    every = poisson._conjugate_gradient(x, 1e-8, 10_000, check_every=1)
    for check_every in (3, 10, 64):
        assert torch.equal(poisson._conjugate_gradient(x, 1e-8, 10_000, check_every=check_every), every)
    exact = poisson.solve_spectral(x)
    error = (every - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert error.max() < 1e-5


def test_cg_stops_once_all_examples_have_converged():
    """The end of the loop is still found: a loose tolerance needs far fewer iterations, so the
    solve differs from a tight one by about that tolerance, and a cap of 1 iteration is one CG step."""
    x = _fields(3, seed=1)
    exact = poisson.solve_spectral(x)
    loose = poisson._conjugate_gradient(x, 1e-2, 10_000, check_every=10)
    relative = ((loose - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)).max()
    assert 1e-6 < relative < 0.5
    one_step = poisson._conjugate_gradient(x, 1e-12, 1, check_every=10)
    b = -x
    alpha = (b * b).sum((1, 2), keepdim=True) / (b * -poisson.laplace(b)).sum((1, 2), keepdim=True)
    torch.testing.assert_close(one_step, alpha * b, rtol=1e-12, atol=0)
