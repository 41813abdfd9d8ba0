"""Hessian-free optimiser: curvature products against explicit matrices, CG, damping, resume."""

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from sip_train.rules.hessian_free import (
    HessianFree,
    conjugate_gradient,
    gauss_newton_product,
    hessian_product,
    levenberg_marquardt_damping,
)


def _mlp(generator_seed: int, hidden: int = 4) -> nn.Module:
    torch.manual_seed(generator_seed)
    return nn.Sequential(nn.Linear(3, hidden), nn.Tanh(), nn.Linear(hidden, 2)).double()


def _physics_loss(x: torch.Tensor, matrix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Non-quadratic in x: L = 1/2 ||sin(x) A^T - b||^2 summed over the batch."""
    return 0.5 * ((torch.sin(x) @ matrix.T - target) ** 2).sum()


@pytest.fixture
def mlp_problem():
    generator = torch.Generator().manual_seed(0)
    net = _mlp(0)
    inputs = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    matrix = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    target = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    names = [name for name, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]

    def output_of(theta: torch.Tensor) -> torch.Tensor:
        chunks = theta.split([math.prod(s) for s in shapes])
        weights = {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}
        return functional_call(net, weights, (inputs,))

    def forward():
        x = net(inputs)
        return _physics_loss(x, matrix, target), x

    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return net, forward, output_of, lambda x: _physics_loss(x, matrix, target), theta


def test_gauss_newton_product_matches_explicit_jt_h_j(mlp_problem):
    net, forward, output_of, loss_of_x, theta = mlp_problem
    jacobian = torch.autograd.functional.jacobian(output_of, theta).reshape(10, -1)
    x = output_of(theta).detach()
    hessian_x = torch.autograd.functional.hessian(lambda flat: loss_of_x(flat.view(5, 2)), x.reshape(-1))
    ggn = jacobian.T @ hessian_x @ jacobian
    loss, output = forward()
    product = gauss_newton_product(loss, output, list(net.parameters()))
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(theta.numel(), generator=generator, dtype=torch.float64)
        torch.testing.assert_close(product(v), ggn @ v, rtol=1e-10, atol=1e-12)


def test_hessian_product_matches_explicit_hessian(mlp_problem):
    net, forward, output_of, loss_of_x, theta = mlp_problem
    hessian = torch.autograd.functional.hessian(lambda t: loss_of_x(output_of(t)), theta)
    jacobian = torch.autograd.functional.jacobian(output_of, theta).reshape(10, -1)
    hessian_x = torch.autograd.functional.hessian(
        lambda flat: loss_of_x(flat.view(5, 2)), output_of(theta).detach().reshape(-1))
    assert not torch.allclose(hessian, jacobian.T @ hessian_x @ jacobian, atol=1e-3)
    loss, _ = forward()
    product = hessian_product(loss, list(net.parameters()))
    generator = torch.Generator().manual_seed(2)
    for _ in range(3):
        v = torch.randn(theta.numel(), generator=generator, dtype=torch.float64)
        torch.testing.assert_close(product(v), hessian @ v, rtol=1e-10, atol=1e-12)


def test_conjugate_gradient_solves_spd_system_and_stores_grid():
    generator = torch.Generator().manual_seed(3)
    basis = torch.randn(30, 30, generator=generator, dtype=torch.float64)
    matrix = basis @ basis.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=generator, dtype=torch.float64)
    result = conjugate_gradient(lambda v: matrix @ v, b, torch.zeros(30, dtype=torch.float64),
                                max_iter=200, min_window=10, progress_tol=1e-12, store_ratio=1.3)
    iteration, solution, phi = result.iterates[-1]
    exact = torch.linalg.solve(matrix, b)
    torch.testing.assert_close(solution, exact, rtol=1e-6, atol=1e-8)
    assert phi == pytest.approx(-0.5 * b.dot(exact).item(), rel=1e-9)
    assert iteration == result.iterations < 200
    grid = sorted({math.ceil(1.3 ** j) for j in range(40)})
    stored = [i for i, _, _ in result.iterates[:-1]]
    assert stored == [i for i in grid if i <= stored[-1]]


def test_conjugate_gradient_progress_test_stops_early():
    """Ill-conditioned system whose objective is dominated by the well-resolved large eigenvalues."""
    diagonal = torch.logspace(-6, 0, 400, dtype=torch.float64)
    b = diagonal.clone()
    loose = conjugate_gradient(lambda v: diagonal * v, b, torch.zeros_like(b), max_iter=250,
                               min_window=10, progress_tol=5e-4, store_ratio=1.3)
    tight = conjugate_gradient(lambda v: diagonal * v, b, torch.zeros_like(b), max_iter=250,
                               min_window=10, progress_tol=1e-12, store_ratio=1.3)
    assert 10 <= loose.iterations < 50 and tight.iterations == 250
    optimum = -0.5 * (b * b / diagonal).sum().item()
    assert loose.iterates[-1][2] == pytest.approx(optimum, rel=1e-2)


def _least_squares_problem():
    generator = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    net = nn.Linear(4, 3).double()
    inputs = torch.randn(8, 4, generator=generator, dtype=torch.float64)
    matrix = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    target = torch.randn(8, 5, generator=generator, dtype=torch.float64)

    def forward():
        x = net(inputs)
        return 0.5 * ((x @ matrix.T - target) ** 2).sum(), x

    def residual_of(weight_bias: torch.Tensor) -> torch.Tensor:
        weight, bias = weight_bias[:12].view(3, 4), weight_bias[12:]
        return ((inputs @ weight.T + bias) @ matrix.T - target).reshape(-1)

    return net, forward, residual_of


def test_one_step_reaches_least_squares_minimum_and_damping_falls():
    net, forward, residual_of = _least_squares_problem()
    theta = torch.cat([net.weight.detach().reshape(-1), net.bias.detach()])
    design = torch.autograd.functional.jacobian(residual_of, theta)
    optimum = theta - torch.linalg.lstsq(design, residual_of(theta)).solution
    loss_optimum = 0.5 * residual_of(optimum).square().sum().item()
    optimizer = HessianFree(net.parameters(), damping=1e-8)
    loss_before = optimizer.step(forward).item()
    loss_after = forward()[0].item()
    assert loss_after - loss_optimum <= 1e-8 * (loss_before - loss_optimum)
    torch.testing.assert_close(torch.cat([net.weight.detach().reshape(-1), net.bias.detach()]), optimum)
    assert optimizer.last_stats["rho"] == pytest.approx(1.0, abs=1e-6)
    assert optimizer.param_groups[0]["damping"] == pytest.approx(1e-8 * 2 / 3)


def test_damping_rises_after_overshooting_step():
    """Pseudo-Huber loss sqrt(1 + x^2): the Newton step -x (1 + x^2) overshoots, so rho < 0."""
    theta = nn.Parameter(torch.tensor([2.0, -3.0, 2.5], dtype=torch.float64))

    def forward():
        x = 1.0 * theta
        return torch.sqrt(1 + x ** 2).sum(), x

    optimizer = HessianFree([theta], damping=1e-6)
    loss_before = optimizer.step(forward).item()
    stats = optimizer.last_stats
    assert stats["rho"] < 0.25
    assert optimizer.param_groups[0]["damping"] == pytest.approx(1.5e-6)
    assert 0 < stats["step_size"] < 1
    assert stats["loss_after"] == pytest.approx(forward()[0].item())
    assert stats["loss_after"] < loss_before


def test_levenberg_marquardt_rule():
    assert levenberg_marquardt_damping(1.0, 0.1) == 1.5
    assert levenberg_marquardt_damping(1.0, float("nan")) == 1.5
    assert levenberg_marquardt_damping(1.0, 0.5) == 1.0
    assert levenberg_marquardt_damping(1.0, 0.9) == pytest.approx(2 / 3)


def _mlp_training(seed: int):
    """Tanh MLP through linear physics (convex in x, like Poisson and heat): L = 1/2 ||x A^T - b||^2."""
    net = _mlp(seed, hidden=8)
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(16, 3, generator=generator, dtype=torch.float64)
    matrix = torch.randn(3, 2, generator=generator, dtype=torch.float64)
    target = torch.randn(16, 2, generator=generator, dtype=torch.float64) @ matrix.T

    def forward():
        x = net(inputs)
        return 0.5 * ((x @ matrix.T - target) ** 2).sum(), x

    return net, forward


def test_state_dict_resume_takes_the_same_step():
    net_a, forward_a = _mlp_training(6)
    optimizer_a = HessianFree(net_a.parameters(), damping=0.3, cg_max_iter=20)
    for _ in range(2):
        optimizer_a.step(forward_a)
    saved_optimizer = copy.deepcopy(optimizer_a.state_dict())
    saved_net = copy.deepcopy(net_a.state_dict())
    optimizer_a.step(forward_a)

    def resumed(load_optimizer: bool):
        net, forward = _mlp_training(7)
        net.load_state_dict(saved_net)
        optimizer = HessianFree(net.parameters(), cg_max_iter=20)
        if load_optimizer:
            optimizer.load_state_dict(saved_optimizer)
        return net, forward, optimizer

    net_b, forward_b, optimizer_b = resumed(load_optimizer=True)
    assert optimizer_b.param_groups[0]["damping"] == saved_optimizer["param_groups"][0]["damping"] != 1.0
    for index, p in enumerate(net_b.parameters()):
        warm_start = saved_optimizer["state"][index]["cg_warm_start"]
        assert warm_start.abs().max() > 0
        assert torch.equal(optimizer_b.state[p]["cg_warm_start"], warm_start)
        assert optimizer_b.state[p]["step"] == 2
    optimizer_b.step(forward_b)
    for p_a, p_b in zip(net_a.parameters(), net_b.parameters()):
        torch.testing.assert_close(p_b, p_a, rtol=1e-12, atol=1e-14)
    assert optimizer_b.last_stats == pytest.approx(optimizer_a.last_stats)

    net_c, forward_c, optimizer_c = resumed(load_optimizer=False)
    optimizer_c.step(forward_c)
    assert not torch.allclose(net_c[0].weight, net_a[0].weight)


def test_diagnostics_and_loss_decrease_with_hessian_curvature():
    net, forward = _mlp_training(8)
    optimizer = HessianFree(net.parameters(), curvature="hessian", damping=1.0, cg_max_iter=30)
    losses = []
    for _ in range(3):
        loss = optimizer.step(forward)
        stats = optimizer.last_stats
        assert set(stats) == {"loss", "loss_after", "damping", "rho", "cg_iters", "cg_iter_chosen",
                              "step_size"}
        assert all(isinstance(value, float) for value in stats.values())
        assert stats["loss"] == loss.item()
        assert stats["loss_after"] == pytest.approx(forward()[0].item())
        assert 0 <= stats["cg_iter_chosen"] <= stats["cg_iters"] <= 30
        assert stats["loss_after"] <= stats["loss"]
        losses.append(stats["loss_after"])
    assert losses[-1] < losses[0]


def test_ggn_training_decreases_loss():
    net, forward = _mlp_training(9)
    optimizer = HessianFree(net.parameters(), cg_max_iter=50)
    first = forward()[0].item()
    for _ in range(5):
        optimizer.step(forward)
    assert forward()[0].item() < 0.5 * first
