"""Half-inverse gradients and Gauss-Newton network updates: the direction against dense references,
the truncation, the start-up checks, and short training runs that lower the loss."""
from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_config
from sip_train.module import build_components
from sip_train.networks.mlp import MLP
from sip_train.problems.base import InverseProblem
from sip_train.problems.sine import Sine
from sip_train.rules.base import PlainStep
from sip_train.rules.hig import HalfInverseGradient, inverse_direction, stacked_jacobian
from sip_train.run import ConfigError, train


class Sine64(Sine):
    """The sine problem with the network fed in the observation's dtype, so a float64 network runs end to end."""

    def network_input(self, y_target: torch.Tensor) -> torch.Tensor:
        return y_target


class LinearMap(InverseProblem):
    """y = A x with A (3, 2): fitting a linear network is a linear least-squares problem in its weights."""

    x_shape, y_shape = (2,), (3,)

    def __init__(self) -> None:
        super().__init__("sum")
        self.matrix = torch.tensor([[1.0, 0.5], [-0.3, 2.0], [0.7, -1.2]], dtype=torch.float64)

    def network_input(self, y_target: torch.Tensor) -> torch.Tensor:
        return y_target

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.matrix.T



def hig(lr: float = 1.0, kappa: float = 0.5, truncation: float = 1e-6, **options) -> HalfInverseGradient:
    return HalfInverseGradient(functools.partial(torch.optim.SGD), lr, kappa=kappa, truncation=truncation, **options)


def tiny_sine_setup(examples: int = 5) -> tuple[InverseProblem, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    problem = Sine64(xi=3.0, phi=20.0, batch_reduction="mean")
    network = MLP((2,), (2,), hidden=[4, 3], activation="tanh").double()
    y_target = 2 * torch.rand(examples, 2, dtype=torch.float64) - 1
    return problem, network, y_target


def loop_jacobian(problem: InverseProblem, network: torch.nn.Module, y_target: torch.Tensor) -> np.ndarray:
    """d y_ik / d theta one example and one component at a time (rows example-major), with plain autograd."""
    rows = []
    for target in y_target:
        batch = target.unsqueeze(0)
        y = problem.simulate(problem.prepare_prediction(network(problem.network_input(batch)), batch)).flatten()
        for component in y:
            grads = torch.autograd.grad(component, list(network.parameters()), retain_graph=True)
            rows.append(torch.cat([g.flatten() for g in grads]).numpy())
    return np.stack(rows)


def loss_gradient(problem: InverseProblem, network: torch.nn.Module, y_target: torch.Tensor) -> np.ndarray:
    """g = d(batch objective)/dy, flattened example-major."""
    with torch.no_grad():
        y = problem.simulate(problem.prepare_prediction(network(problem.network_input(y_target)), y_target))
    y.requires_grad_()
    return torch.autograd.grad(problem.reduce(problem.y_loss(y, y_target)), y)[0].flatten().numpy()


def flat_weights(network: torch.nn.Module) -> np.ndarray:
    return torch.cat([p.detach().flatten() for p in network.parameters()]).numpy().copy()


@pytest.mark.parametrize("chunk", [None, 2])
def test_stacked_per_example_jacobian_matches_a_loop_over_examples(chunk):
    problem, network, y_target = tiny_sine_setup()
    jacobian, y, x = stacked_jacobian(problem, network, y_target, chunk_size=chunk)
    reference = loop_jacobian(problem, network, y_target)
    assert jacobian.shape == (5 * 2, sum(p.numel() for p in network.parameters()))
    np.testing.assert_allclose(jacobian.numpy(), reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y, problem.simulate(x))


@pytest.mark.parametrize("kappa", [0.5, 1.0])
def test_a_step_moves_the_weights_by_the_dense_numpy_direction(kappa):
    problem, network, y_target = tiny_sine_setup()
    jacobian, g = loop_jacobian(problem, network, y_target), loss_gradient(problem, network, y_target)
    u, s, vt = np.linalg.svd(jacobian, full_matrices=False)
    kept = s > 1e-6 * s.max()
    reference = vt.T[:, kept] @ (s[kept] ** -kappa * (u.T[kept] @ g))
    before = flat_weights(network)
    rule = hig(lr=0.3, kappa=kappa)
    result = rule.training_step(PlainStep(problem, network, rule), y_target)
    np.testing.assert_allclose(flat_weights(network), before - 0.3 * reference, rtol=1e-9, atol=1e-12)
    assert result["stats"]["sv_kept"] == kept.sum()
    assert result["stats"]["sv_max"].item() == pytest.approx(s.max())
    assert result["stats"]["sv_min_kept"].item() == pytest.approx(s[kept].min())


def test_kappa_minus_one_is_the_plain_gradient_of_the_batch_loss():
    problem, network, y_target = tiny_sine_setup()
    step = PlainStep(problem, network, hig())
    loss = problem.reduce(problem.physics_loss(step.predict(y_target), y_target))
    gradient = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(network.parameters()))])
    jacobian, _, _ = stacked_jacobian(problem, network, y_target)
    direction, _, _ = inverse_direction(jacobian, torch.from_numpy(loss_gradient(problem, network, y_target)),
                                        kappa=-1.0, truncation=0.0)
    torch.testing.assert_close(direction, gradient, rtol=1e-10, atol=1e-12)


def test_gauss_newton_solves_a_linear_least_squares_problem_in_one_step():
    torch.manual_seed(0)
    problem = LinearMap()
    network = MLP((3,), (2,), hidden=[]).double()  # x = W y* + b: the simulated y is linear in the weights
    y_target = torch.randn(8, 3, dtype=torch.float64)
    design = loop_jacobian(problem, network, y_target)  # y = design @ theta (linear, so the Jacobian is exact)
    best_theta = np.linalg.lstsq(design, y_target.flatten().numpy(), rcond=None)[0]
    best_loss = 0.5 * np.sum((design @ best_theta - y_target.flatten().numpy()) ** 2)
    initial_loss = problem.reduce(problem.physics_loss(PlainStep(problem, network, hig()).predict(y_target), y_target))
    rule = hig(lr=1.0, kappa=1.0)
    step = PlainStep(problem, network, rule)
    rule.training_step(step, y_target)
    loss = problem.reduce(problem.physics_loss(step.predict(y_target), y_target)).item()
    assert best_loss > 0.1 and initial_loss > 2 * best_loss  # over-determined, and not solved at the start
    assert loss == pytest.approx(best_loss, rel=1e-10)
    np.testing.assert_allclose(flat_weights(network), best_theta, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kappa", [0.5, 1.0, -1.0])
def test_truncation_drops_exactly_the_singular_values_below_its_share_of_the_largest(kappa):
    generator = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(6, 4, generator=generator, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(9, 4, generator=generator, dtype=torch.float64))[0]
    singular_values = torch.tensor([2.0, 0.5, 2e-3, 1e-5], dtype=torch.float64)
    jacobian = u @ torch.diag(singular_values) @ v.T
    g = torch.randn(6, generator=generator, dtype=torch.float64)
    for truncation, kept in ((1e-4, 3), (1e-6, 4), (0.01, 2)):
        direction, s, mask = inverse_direction(jacobian, g, kappa, truncation)
        expected = v[:, :kept] @ (singular_values[:kept] ** -kappa * (u[:, :kept].T @ g))
        assert mask.sum() == kept
        torch.testing.assert_close(s[:4], singular_values)  # J is 6 x 9 of rank 4: two more, zero, values
        assert s[4:].abs().max() < 1e-14
        torch.testing.assert_close(direction, expected, rtol=1e-9, atol=1e-12)


def test_the_memory_check_refuses_paper_sized_poisson_with_the_unet_naming_the_three_sizes():
    cfg = compose_config(["problem=poisson", "optimizer=hig"])
    with pytest.raises(ValueError) as refusal:
        build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    message = str(refusal.value)
    assert "\n" not in message and message.startswith("optimizer=hig needs")
    assert "batch 128 x dim_y 4096 = 524288 rows, 37697 network parameters" in message
    assert "optimizer.memory_budget_gb=2.0" in message


def test_a_network_with_batch_norm_is_refused_at_start_up(tiny_config, tmp_path):
    cfg = tiny_config("problem=poisson", "optimizer=hig", "problem.resolution=8", "network.levels=1")
    with pytest.raises(ConfigError, match="optimizer=hig cannot train network UNet: its BatchNorm2d couples"):
        train(cfg)


@pytest.mark.parametrize("override,message", [
    ("optimizer.kappa=2", "optimizer.kappa=2 is invalid: must be in [-1, 1]"),
    ("optimizer.truncation=-1", "optimizer.truncation=-1 is invalid: must be in [0, 1)"),
    ("optimizer.jacobian_chunk=0", "optimizer.jacobian_chunk=0 is invalid: must be a positive integer or null"),
])
def test_a_bad_setting_fails_at_start_up_naming_key_and_value(override, message, tiny_config):
    with pytest.raises(ConfigError) as error:
        train(tiny_config("problem=exp", "optimizer=hig", override))
    assert str(error.value).startswith(message)


def test_a_non_finite_jacobian_gives_nan_weights_for_the_divergence_check():
    problem, network, y_target = tiny_sine_setup()
    with torch.no_grad():
        network.layers[1].weight[0, 0] = float("nan")  # a diverged weight
    rule = hig()
    result = rule.training_step(PlainStep(problem, network, rule), y_target)
    assert all(p.isnan().all() for p in network.parameters())
    assert result["stats"]["sv_kept"] == 0


#: problem -> ({kappa: lr}, extra overrides) of short training runs (10 steps; exp 20). lr 1 is the paper's on the oscillators at
#: batch 128; Gauss-Newton at batch 16 needs a smaller one (its step, scaled by 1/batch, fits the batch).
RUNS = {
    "oscillators": ({0.5: 1.0, 1.0: 0.3}, ["data.train_size=64", "data.val_size=64", "data.val_batch_size=64"]),
    "sine": ({0.5: 1.0, 1.0: 1.0}, []),
    "exp": ({0.5: 0.01, 1.0: 0.01}, ["trainer.max_steps=20", "trainer.val_check_interval=20"]),
}


@pytest.mark.parametrize("problem", list(RUNS))
@pytest.mark.parametrize("kappa", [0.5, 1.0])
def test_hig_and_gauss_newton_lower_the_validation_loss(problem, kappa, tiny_config, tmp_path):
    lrs, extra = RUNS[problem]
    summary = train(tiny_config(f"problem={problem}", "optimizer=hig", f"optimizer.kappa={kappa}",
                                f"optimizer.lr={lrs[kappa]}", "data.batch_size=16", "trainer.max_steps=10",
                                "trainer.val_check_interval=10", "figure_examples=0", *extra))
    assert summary["status"] == "completed" and summary["steps"] == (20 if problem == "exp" else 10)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    curve = metrics["val/y_l2"].dropna().tolist()
    assert len(curve) == 2 and curve[-1] < 0.8 * curve[0]
    for stat in ("sv_max", "sv_min_kept", "sv_kept", "svd_ms"):
        assert (metrics[f"train/{stat}"].dropna() > 0).all(), stat
