"""Coupled nonlinear oscillators (HIG paper): the equations, RK4 against analytic and high-order reference
solutions, gradients against finite differences, and the problem's wiring into the framework."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure
from scipy.integrate import solve_ivp

from conftest import compose_config
from sip_train.physics import oscillators
from sip_train.run import ConfigError, train


def test_the_derivative_is_the_chain_of_cubic_couplings_with_the_control_on_the_last_oscillator():
    q, p = torch.tensor([[0.3, -0.5, 0.9]], dtype=torch.float64), torch.tensor([[0.1, 0.2, -0.7]], dtype=torch.float64)
    control = torch.tensor([0.4], dtype=torch.float64)
    expected_dp = [
        -0.3 + (-0.5 - 0.3) ** 3,                        # no left neighbour
        0.5 + (0.9 + 0.5) ** 3 + (0.3 + 0.5) ** 3,        # both neighbours
        -0.9 + (-0.5 - 0.9) ** 3 + 3.0 * 0.4,            # no right neighbour; the control, factor 3
    ]
    derivative = oscillators.derivative(torch.cat([q, p], -1), control)[0]
    torch.testing.assert_close(derivative[:3], p[0])
    torch.testing.assert_close(derivative[3:], torch.tensor(expected_dp, dtype=torch.float64))


def test_a_free_single_oscillator_follows_the_analytic_harmonic_solution():
    initial = torch.tensor([[0.7, -0.2]], dtype=torch.float64)
    states = oscillators.trajectory(initial, torch.zeros(1, 96, dtype=torch.float64), dt=0.125)[0]
    t = torch.arange(97, dtype=torch.float64) * 0.125
    exact_q = 0.7 * torch.cos(t) - 0.2 * torch.sin(t)
    exact_p = -0.7 * torch.sin(t) - 0.2 * torch.cos(t)
    error = (states - torch.stack([exact_q, exact_p], -1)).abs().max().item()
    phase_error = math.hypot(0.7, 0.2) * 12.0 * 0.125**4 / 120  # RK4 loses dt^5 / 120 of phase per step
    assert 0.5 * phase_error < error < 2 * phase_error


def reference_final_state(initial: np.ndarray, controls: np.ndarray, dt: float) -> np.ndarray:
    """The ODE integrated by scipy (DOP853, rtol 1e-10) interval by interval, the control constant in each."""
    state = initial
    for control in controls:
        def rhs(_, s, c=control):
            return oscillators.derivative(torch.from_numpy(s)[None], torch.tensor([c]))[0].numpy()
        state = solve_ivp(rhs, (0.0, dt), state, method="DOP853", rtol=1e-10, atol=1e-12).y[:, -1]
    return state


def test_rk4_matches_a_high_order_reference_and_converges_at_fourth_order():
    generator = torch.Generator().manual_seed(0)
    initial = torch.rand(1, 4, generator=generator, dtype=torch.float64)
    controls = 0.5 * torch.randn(1, 24, generator=generator, dtype=torch.float64)  # 24 steps of 1/8: t = 3
    reference = reference_final_state(initial[0].numpy(), controls[0].numpy(), dt=0.125)
    errors = []
    for refinement in (1, 2):  # the same piecewise-constant control, each interval split in `refinement` steps
        final = oscillators.final_state(initial, controls.repeat_interleave(refinement, -1), 0.125 / refinement)
        errors.append(np.abs(final[0].numpy() - reference).max())
    assert errors[0] < 1e-4
    assert 12 < errors[0] / errors[1] < 20  # 2^4 = 16


def test_the_final_state_has_the_gradient_of_finite_differences():
    problem = instantiate(compose_config(["problem=oscillators"]).problem)
    generator = torch.Generator().manual_seed(1)
    initial = torch.rand(2, 4, generator=generator, dtype=torch.float64)
    control = (0.3 * torch.randn(2, 96, generator=generator, dtype=torch.float64)).requires_grad_()
    initial.requires_grad_()
    # fast mode: finite differences along random directions of the control and the initial state
    assert torch.autograd.gradcheck(problem.simulate, (control, initial), fast_mode=True)


def test_the_problem_steers_back_to_the_observed_initial_state():
    problem = instantiate(compose_config(["problem=oscillators"]).problem)
    x_true, y_target, initial_state = problem.sample(256, torch.Generator().manual_seed(0))
    assert problem.x_shape == (96,) and problem.y_shape == (4,) and problem.primary_metric == "y_l2"
    assert x_true is None  # no true control is known
    assert 0 <= y_target.min() and y_target.max() < 1
    assert torch.equal(initial_state, y_target)  # the observed input is the target
    assert y_target.mean().item() == pytest.approx(0.5, abs=0.05)
    control = torch.randn(256, 96, generator=torch.Generator().manual_seed(1))
    y = problem.simulate(control, initial_state)
    torch.testing.assert_close(y, oscillators.final_state(y_target, control, 0.125))
    metrics = problem.metrics(control, x_true, y, y_target, initial_state)
    assert set(metrics) == {"y_l2", "paper_loss"}  # no true control, so no x_l1
    torch.testing.assert_close(metrics["paper_loss"], (y - y_target).pow(2).sum(1))
    torch.testing.assert_close(metrics["y_l2"], 0.5 * metrics["paper_loss"])
    torch.testing.assert_close(problem.reduce(problem.y_loss(y, y_target)), metrics["paper_loss"].mean())


def test_the_figure_shows_trajectories_and_controls_of_each_example():
    problem = instantiate(compose_config(["problem=oscillators"]).problem)
    x_true, y_target, initial_state = problem.sample(2, torch.Generator().manual_seed(0))
    control = torch.randn(2, 96)
    figure = problem.figure(control, x_true, problem.simulate(control, initial_state), y_target, initial_state)
    assert isinstance(figure, Figure) and len(figure.axes) == 4
    assert len(figure.axes[0].lines) == 2 * 4  # four state components, each with its target dot


@pytest.mark.parametrize("override,message", [
    ("problem.steps=0", "problem.steps=0 is invalid: must be a positive integer"),
    ("problem.dt=-0.1", "problem.dt=-0.1 is invalid: must be a positive number"),
])
def test_a_bad_value_fails_at_start_up(override, message, tiny_config):
    with pytest.raises(ConfigError) as error:
        train(tiny_config("problem=oscillators", "optimizer=adam", override))
    assert str(error.value) == message


@pytest.mark.parametrize("optimizer,batch_size,lr", [("hig", 128, 1.0), ("adam", 512, 3e-4)])
def test_the_paper_experiment_sets_each_rules_batch_size_and_learning_rate(optimizer, batch_size, lr):
    cfg = compose_config(["experiment=paper_hig_oscillators", f"optimizer={optimizer}"])
    assert (cfg.data.batch_size, cfg.optimizer.lr) == (batch_size, lr)
    assert (cfg.data.train_size, cfg.data.val_size, cfg.trainer.max_time) == (4096, 4096, 3600)
    assert list(cfg.network.hidden) == [20, 20, 20] and cfg.network.activation == "relu"
    if optimizer == "hig":
        assert (cfg.optimizer.batch_size, cfg.optimizer.truncation, cfg.optimizer.kappa) == (128, 1e-6, 0.5)
    assert math.isclose(instantiate(cfg.problem).dt * instantiate(cfg.problem).steps, 12.0)
