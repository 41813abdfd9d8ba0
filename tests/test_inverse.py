"""Generic SIP inverse solvers: Gauss-Newton, L-BFGS, accumulated gradient descent, and their parts."""
from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, options
from sip_train.inverse.cg import conjugate_gradient
from sip_train.inverse.gauss_newton import GaussNewton, dense_jacobian
from sip_train.inverse.gradient_descent import GradientDescent
from sip_train.inverse.lbfgs import LBFGS
from sip_train.inverse.linearization import Linearization, supports_forward_mode
from sip_train.physics import wave_packet
from sip_train.problems.exp import Exp
from sip_train.problems.fluid import Fluid
from sip_train.problems.poisson import Poisson
from sip_train.problems.sine import Sine
from sip_train.problems.wavepacket import WavePacket
from sip_train.rules.normalized import NormalizedGradient
from sip_train.rules.sip import SIP

F64 = torch.float64
#: Overrides that make each problem's simulate test-sized.
SMALL = {"poisson": ["problem.resolution=8"], "heat": ["problem.resolution=8"], "fluid": ["problem.resolution=8"]}


def _problem(name: str, *overrides: str):
    return instantiate(compose_config([f"problem={name}", *SMALL.get(name, []), *overrides]).problem)


def _sample(problem, n: int = 3, seed: int = 0):
    return problem.sample(n, torch.Generator().manual_seed(seed))


# --- Gauss-Newton against exact inverses ----------------------------------------------------


@pytest.mark.parametrize("jacobian", ["forward", "reverse"])
def test_gauss_newton_on_poisson_recovers_x_star_and_equals_the_hand_written_update(jacobian):
    problem = Poisson(resolution=12)
    x_true, _ = _sample(problem)
    x_true = x_true.double()
    y_target = problem.simulate(x_true)  # noise-free, in float64
    x = torch.randn(x_true.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    solver = GaussNewton(iterations=400, damping=0.0, rel_tol=1e-10, jacobian=jacobian, check_every=5)
    y, dx = solver.simulate_and_update(problem, x, y_target)
    torch.testing.assert_close(y, problem.simulate(x))
    assert (solver.last_cg_iterations < 400).all()  # converged before the budget
    torch.testing.assert_close(x + dx, x_true, rtol=0, atol=1e-6 * x_true.abs().max().item())
    torch.testing.assert_close(dx, problem.inverse_update(x, y, y_target), rtol=0, atol=1e-6 * x_true.abs().max().item())


def test_gauss_newton_on_exp_and_sine_is_newtons_step_on_the_equations():
    """Square invertible J and an L2 loss: the undamped step is Newton-Raphson's -J^-1 (P(x) - y*)."""
    exp = Exp()
    x = torch.linspace(-6, 0, 7, dtype=F64)[:, None]
    y_target = torch.exp(x + 0.3)
    _, dx = GaussNewton(damping=0.0, outer_iterations=1).simulate_and_update(exp, x, y_target)
    torch.testing.assert_close(dx, (y_target - torch.exp(x)) / torch.exp(x))
    # near the solution, where the loss Hessian is positive, it agrees with the problem's own Newton step
    near = torch.log(y_target) - 1e-4
    _, dx_near = GaussNewton(damping=0.0, outer_iterations=1).simulate_and_update(exp, near, y_target)
    torch.testing.assert_close(dx_near, exp.inverse_update(near, torch.exp(near), y_target), rtol=1e-3, atol=0)

    sine = Sine(xi=10.0, phi=30.0)
    x_true, y_target = _sample(sine, 6)
    x = x_true.double() + 0.01 * torch.randn(x_true.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
    y_target = y_target.double()
    _, dx = GaussNewton(damping=0.0, outer_iterations=1).simulate_and_update(sine, x, y_target)
    jacobian = torch.stack([torch.autograd.functional.jacobian(lambda v: sine.simulate(v[None])[0], xi) for xi in x])
    newton = -torch.linalg.solve(jacobian, sine.simulate(x) - y_target)
    torch.testing.assert_close(dx, newton)


def test_gauss_newton_dense_path_reaches_the_lbfgsb_optimum_on_wavepacket():
    problem = WavePacket(noise=0.1)
    x_true, y_target = _sample(problem, 6, seed=3)
    y_target = y_target.double()
    start = torch.full_like(x_true, 0.5 * sum(problem.t0_range), dtype=F64)
    baseline = wave_packet.fit_lbfgsb(y_target, start[0, 0].item(), problem.t0_range, 1000, **problem.packet)
    solver = GaussNewton(outer_iterations=100, damping=1e-3)
    _, dx = solver.simulate_and_update(problem, start, y_target)
    loss = problem.y_loss(problem.simulate(start + dx), y_target)
    baseline_loss = problem.y_loss(problem.simulate(baseline), y_target)
    assert (loss <= baseline_loss * (1 + 1e-6)).all()
    torch.testing.assert_close(start + dx, baseline, rtol=0, atol=1e-3)


# --- Jacobian products against finite differences -------------------------------------------


@pytest.mark.parametrize("name", options("problem"))
def test_jvp_double_vjp_and_dense_jacobians_match_finite_differences(name):
    problem = _problem(name)
    generator = torch.Generator().manual_seed(4)
    _, y_target, *observed = _sample(problem, 2)
    observed = tuple(o.double() for o in observed)
    prediction = torch.randn(2, *problem.x_shape, generator=generator, dtype=F64)  # as a network's output
    x = problem.prepare_prediction(prediction, y_target.double()).double()
    y_target = problem.simulate(x, *observed)
    v = torch.randn(x.shape, generator=generator, dtype=F64)
    epsilon = 1e-6 * (x.abs().max().item() + 1)
    finite = (problem.simulate(x + epsilon * v, *observed) - problem.simulate(x - epsilon * v, *observed)) / (2 * epsilon)
    modes = [False, True] if supports_forward_mode(problem, x, observed) else [False]
    for forward in modes:
        linear = Linearization(problem, x, y_target, forward, observed)
        torch.testing.assert_close(linear.jvp(v), finite, rtol=1e-5, atol=1e-6 * finite.abs().max().item())
        u = torch.randn(finite.shape, generator=generator, dtype=F64)  # J^T is the adjoint of J
        torch.testing.assert_close((linear.vjp(u) * v).sum(), (u * linear.jvp(v)).sum())
    if math.prod(x.shape[1:]) <= 4:
        jacobian = dense_jacobian(Linearization(problem, x, y_target, modes[-1], observed))
        dense = torch.einsum("bmn,bn->bm", jacobian, v.flatten(1))
        torch.testing.assert_close(dense, finite.flatten(1), rtol=1e-5, atol=1e-6 * finite.abs().max().item())


class OnceDifferentiableExp(Exp):
    """A simulator whose backward pass is not differentiable again (no double vjp), but has forward mode."""

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return _OnceExp.apply(x)


class _OnceExp(torch.autograd.Function):
    @staticmethod
    def forward(x):
        return torch.exp(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]

    @staticmethod
    def jvp(ctx, tangent):
        return tangent * ctx.saved_tensors[0]


def test_auto_jacobian_mode_takes_the_double_vjp_where_it_works_and_forward_mode_otherwise():
    poisson_cg = Poisson(resolution=8, solver="cg")  # a custom autograd Function without forward mode
    assert not supports_forward_mode(poisson_cg, _sample(poisson_cg)[0])
    solver = GaussNewton()
    solver.check(poisson_cg)
    assert solver._forward_mode is False
    once = OnceDifferentiableExp()
    x = torch.tensor([[-1.0], [-2.0]], dtype=F64)
    y_target = torch.exp(x + 0.2)
    with pytest.raises(RuntimeError):  # no double vjp through this simulator
        Linearization(once, x, y_target, forward_mode=False).jvp(torch.ones_like(x))
    solver = GaussNewton(damping=0.0, outer_iterations=1)
    _, dx = solver.simulate_and_update(once, x, y_target)
    assert solver._forward_mode is True
    torch.testing.assert_close(dx, (y_target - torch.exp(x)) / torch.exp(x))


# --- batched CG -------------------------------------------------------------------------------


def test_batched_cg_stops_each_example_at_its_own_tolerance():
    generator = torch.Generator().manual_seed(5)
    spectra = torch.stack([torch.ones(64, dtype=F64), torch.logspace(0, 4, 64, dtype=F64)])  # condition 1 and 1e4
    b = torch.randn(2, 64, generator=generator, dtype=F64)
    solution, used = conjugate_gradient(lambda v: spectra * v, b, iterations=500, rel_tol=1e-8, check_every=3)
    assert used[0] == 1 and used[1] > 30  # the well-conditioned example stopped after one step
    torch.testing.assert_close(solution[0], b[0])  # ... and stayed there while the other went on
    residual = torch.linalg.vector_norm(spectra * solution - b, dim=1)
    assert (residual <= 1e-8 * torch.linalg.vector_norm(b, dim=1)).all()
    _, capped = conjugate_gradient(lambda v: spectra * v, b, iterations=10, rel_tol=1e-8)
    assert capped.tolist() == [1, 10]


# --- L-BFGS and accumulated gradient descent --------------------------------------------------


def test_lbfgs_converges_per_example_on_problems_of_very_different_scale():
    problem = Sine(xi=1.0, phi=0.0)
    x_true, y_target = _sample(problem, 4)
    x = x_true + 0.05
    _, dx = LBFGS(iterations=30).simulate_and_update(problem, x, y_target)
    assert (problem.y_loss(problem.simulate(x + dx), y_target) < 1e-8).all()
    poisson = Poisson(resolution=8)
    x_true, y_target = _sample(poisson, 2)
    x = torch.zeros_like(x_true)
    _, dx = LBFGS(iterations=40).simulate_and_update(poisson, x, y_target)
    before, after = poisson.y_loss(poisson.simulate(x), y_target), poisson.y_loss(poisson.simulate(x + dx), y_target)
    assert (after < 1e-3 * before).all()


def test_gradient_descent_accumulates_k_steps_at_the_first_steps_length():
    problem = Exp()
    x = torch.tensor([[-1.0], [-2.0]], dtype=F64)
    y_target = torch.exp(torch.tensor([[0.0], [0.0]], dtype=F64))
    _, dx = GradientDescent(iterations=3, lr=0.1).simulate_and_update(problem, x, y_target)
    first = 0.1 * (torch.exp(x) - y_target) * torch.exp(x)
    torch.testing.assert_close(dx.abs(), first.abs())
    assert (torch.sign(dx) == -torch.sign(first)).all()
    _, raw = GradientDescent(iterations=3, lr=0.1, rescale=False).simulate_and_update(problem, x, y_target)
    estimate = x.clone()
    for _ in range(3):
        estimate = estimate - 0.1 * (torch.exp(estimate) - y_target) * torch.exp(estimate)
    torch.testing.assert_close(raw, estimate - x)


# --- only the unknowns move -------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["normalized", "sip_generic", "sip_lbfgs", "sip_gauss_newton"])
def test_proxy_rules_on_fluid_move_the_velocity_and_leave_the_observed_marker(rule):
    problem = Fluid(resolution=8)
    v0_true, y_target, m0 = _sample(problem, 2)
    marker = m0.clone()
    x = 0.5 * v0_true  # a predicted v0
    inverse = {"sip_generic": GradientDescent(iterations=2), "sip_lbfgs": LBFGS(iterations=2),
               "sip_gauss_newton": GaussNewton(iterations=3, outer_iterations=1, damping=10.0)}
    proxy = (NormalizedGradient(torch.optim.Adam, lr=1e-3, eta=0.1) if rule == "normalized"
             else SIP(torch.optim.Adam, lr=1e-3, eta=0.1, inverse=inverse[rule]))
    y, dx = proxy.simulate_and_update(problem, x, y_target, m0)
    torch.testing.assert_close(y, problem.simulate(x, m0), rtol=0, atol=0)
    assert dx.shape == x.shape and (dx != 0).any()
    per_example, _ = proxy.objective(problem, x.clone().requires_grad_(True), y_target, m0)
    torch.testing.assert_close(per_example.detach(), 0.5 * (0.1 * dx).pow(2).flatten(1).sum(1))
    assert torch.equal(m0, marker)  # the observed input is read, never written


# --- start-up checks --------------------------------------------------------------------------


class DetachedPoisson(Poisson):
    """A simulator outside autograd (as one calling a non-torch solver would be)."""

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return super().simulate(x.detach())


@pytest.mark.parametrize("inverse", ["gauss_newton", "lbfgs", "gradient_descent", "auto"])
def test_a_non_differentiable_simulator_fails_at_start_up_in_one_line(inverse):
    cfg = compose_config(["optimizer=sip", f"inverse={inverse}"])
    rule = instantiate(cfg.optimizer)
    problem = DetachedPoisson(resolution=8)
    if inverse == "auto":  # Poisson has its own inverse, which needs no derivatives
        rule.check(problem, torch.nn.Identity())
        return
    with pytest.raises(ValueError) as error:
        rule.check(problem, torch.nn.Identity())
    message = str(error.value)
    assert message.startswith(f"inverse={inverse} needs a simulate() differentiable by torch autograd") and "\n" not in message


def test_inverse_problem_is_refused_for_a_problem_without_one():
    rule = instantiate(compose_config(["optimizer=sip", "inverse=problem"]).optimizer)
    with pytest.raises(ValueError, match="inverse=problem needs a hand-written inverse update, which problem WavePacket"):
        rule.check(WavePacket(), torch.nn.Identity())


@pytest.mark.parametrize("override,message", [
    ("inverse.iterations=0", "inverse.iterations=0 is invalid: must be a positive integer"),
    ("inverse.jacobian=magic", "inverse.jacobian='magic' is invalid: choose one of ['auto', 'forward', 'reverse']"),
])
def test_a_bad_solver_setting_names_the_key(override, message):
    with pytest.raises(Exception) as error:
        instantiate(compose_config(["inverse=gauss_newton", override]).optimizer)
    assert message in str(error.value)
