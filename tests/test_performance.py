"""What the performance work must not change: the CG solve that checks for its end only every few iterations,
the cached spectral factors of the kernels, and training with several updates per Lightning step."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from conftest import TINY
from sip_train.config import compose_config
from sip_train.physics import diffuse, poisson
from sip_train.physics.noise import smooth_noise
from sip_train.run import ConfigError, train


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


@pytest.mark.parametrize("kernel", [lambda x: diffuse.fourier(x, 8.0), lambda x: diffuse.inverse_fourier_damped(x, 8.0),
                                    poisson.solve_spectral])
def test_kernel_constants_first_built_in_a_validation_pass_serve_training(kernel):
    """Factors cached while inference mode is on (a validation before the first training step) are ordinary
    tensors: the same kernel is then differentiated in training, with the same values as a fresh build."""
    x = _fields(2, seed=7)[:, :15]  # a grid no other test uses: the cache is built here
    with torch.inference_mode():
        validated = kernel(x)
    trained = kernel(x.clone().requires_grad_())
    trained.square().sum().backward()
    torch.testing.assert_close(trained.detach(), validated, rtol=0, atol=0)


# --- several updates per Lightning step -----------------------------------------------------------

SCHEDULE = ["problem=exp", "optimizer=sip", "figure_examples=0", "trainer.log_every_n_steps=4",
            "trainer.val_check_interval=6", "divergence_check_every=3"]


def _train(run_dir: Path, *overrides: str) -> tuple[list[dict], dict[str, torch.Tensor], dict]:
    """Train a tiny run; its metrics rows (less timings), final weights and summary."""
    summary = train(compose_config([*TINY, *SCHEDULE, *overrides], run_dir))
    with (run_dir / "metrics.csv").open() as file:
        rows = [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(file)]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    return rows, state, summary


@pytest.fixture(scope="module")
def one_update_per_step(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("k1"), "trainer.max_steps=13", "updates_per_step=1")


def _same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0]  # every metric row: same steps, same values
    assert a[1].keys() == b[1].keys() and all(torch.equal(a[1][name], b[1][name]) for name in a[1])
    assert a[2]["status"] == b[2]["status"] == "completed" and a[2]["steps"] == b[2]["steps"] == 13


def test_several_updates_per_step_change_nothing(one_update_per_step, tmp_path):
    """5 updates per Lightning step (cut at validations 6, 12 and max_steps 13; log steps 4, 8, 12 fall inside
    steps): the same batches, weights, logged rows and validations as one update per step, to the bit."""
    rows = one_update_per_step[0]
    assert [row["step"] for row in rows if row.get("train/objective")] == ["4", "8", "12"]
    assert [row["step"] for row in rows if row.get("val/x_l1")] == ["0", "6", "12", "13"]
    _same(_train(tmp_path, "trainer.max_steps=13", "updates_per_step=5"), one_update_per_step)


def test_resume_in_between(one_update_per_step, tmp_path):
    """Stopped at step 7 and continued to 13 (with a final validation at 7 in between): 5 updates per step
    log what one update per step logs, and end at the weights of the uninterrupted run."""
    resumed = {}
    for updates in (1, 5):
        run_dir = tmp_path / str(updates)
        assert _train(run_dir, "trainer.max_steps=7", f"updates_per_step={updates}")[2]["steps"] == 7
        resumed[updates] = _train(run_dir, "trainer.max_steps=13", f"updates_per_step={updates}")
    assert [row["step"] for row in resumed[5][0] if row.get("val/x_l1")] == ["0", "6", "7", "12", "13"]
    _same(resumed[5], resumed[1])
    _same(resumed[5], (resumed[5][0], *one_update_per_step[1:]))


def test_updates_per_step_must_be_positive(tmp_path):
    summary_error = pytest.raises(ConfigError, match="updates_per_step=0 is invalid: must be a positive integer")
    with summary_error:
        train(compose_config([*TINY, "problem=exp", "updates_per_step=0"], tmp_path))
