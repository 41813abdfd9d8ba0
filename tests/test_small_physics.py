"""Physics of the small problems: the sine map, the exponential and the wave packet."""
import math

import pytest
import torch

from sip_train.physics import exponential, sine, wave_packet

F64 = torch.float64


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- sine ---------------------------------------------------------------------------------

CONDITIONS = [(xi, phi) for xi in (1.0, 10.0, 100.0) for phi in (0.0, math.pi / 4)]


def _sine_loss(x: torch.Tensor, y_target: torch.Tensor, xi: float, phi: float) -> torch.Tensor:
    return 0.5 * ((sine.forward(x, xi, phi) - y_target) ** 2).sum(dim=1)


def _sine_points(n: int, xi: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions spread over a region several periods wide, and targets."""
    generator = _generator(seed)
    x = (torch.rand(n, 2, generator=generator, dtype=F64) * 2 - 1) * 2 * xi
    return x, sine.sample(n, generator, dtype=F64)


def _brute_force_nearest(x, y_target, xi, phi, gamma=10.0, periods=400):
    """Enumerate both solution branches over many periods, map each candidate to x with a
    linear solve, and keep the one closest to x in x-space."""
    cos, sin = math.cos(phi), math.sin(phi)
    matrix = torch.diag(torch.tensor([gamma / xi, gamma * xi], dtype=F64)) @ torch.tensor(
        [[cos, -sin], [sin, cos]], dtype=F64
    )
    principal = torch.arcsin(y_target[:, :1])
    n = torch.arange(-periods, periods + 1, dtype=F64)
    u_1 = torch.cat([principal + 2 * math.pi * n, math.pi - principal + 2 * math.pi * n], dim=1)
    u = torch.stack([u_1, y_target[:, 1:].expand_as(u_1)], dim=-1)  # (B, K, 2)
    candidates = torch.linalg.solve(matrix, u.reshape(-1, 2).T).T.reshape(u.shape)
    distance = (candidates - x[:, None]).norm(dim=-1)
    return candidates[torch.arange(len(x)), distance.argmin(dim=1)]


def test_sine_forward_matches_definition():
    x = torch.tensor([[0.03, -0.02]], dtype=F64)
    xi, phi, gamma = 2.0, math.pi / 6, 10.0
    rotated = (
        math.cos(phi) * 0.03 + math.sin(phi) * 0.02,
        math.sin(phi) * 0.03 - math.cos(phi) * 0.02,
    )
    expected = [math.sin(gamma / xi * rotated[0]), gamma * xi * rotated[1]]
    y = sine.forward(x, xi, phi, gamma)
    torch.testing.assert_close(y[0], torch.tensor(expected, dtype=F64))


def test_sine_sample_range_and_determinism():
    y = sine.sample(1000, _generator(3))
    assert y.shape == (1000, 2) and y.dtype == torch.float32
    assert y.min() >= -1 and y.max() <= 1 and y.min() < -0.99 and y.max() > 0.99
    torch.testing.assert_close(y, sine.sample(1000, _generator(3)))


@pytest.mark.parametrize("xi, phi", CONDITIONS)
def test_sine_nearest_solution_matches_brute_force(xi, phi):
    x, y_target = _sine_points(200, xi)
    x_star = sine.nearest_solution(x, y_target, xi, phi)
    torch.testing.assert_close(sine.forward(x_star, xi, phi), y_target, atol=1e-9, rtol=0)
    expected = _brute_force_nearest(x, y_target, xi, phi)
    torch.testing.assert_close(x_star, expected, atol=1e-9 * xi, rtol=1e-9)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("xi, phi", CONDITIONS)
def test_sine_closed_form_derivatives_match_autograd(xi, phi):
    x, y_target = _sine_points(50, xi)
    x = x / xi  # keep u_1 moderate so float64 round-off stays far below the tolerance
    gradient, hessian = sine.loss_gradient_hessian(x, y_target, xi, phi)

    def single_loss(x_i, y_i):
        return _sine_loss(x_i[None], y_i[None], xi, phi)[0]

    expected_gradient = torch.func.vmap(torch.func.grad(single_loss))(x, y_target)
    expected_hessian = torch.func.vmap(torch.func.hessian(single_loss))(x, y_target)
    torch.testing.assert_close(gradient, expected_gradient)
    torch.testing.assert_close(hessian, expected_hessian)


def test_saddle_free_newton_hand_computed():
    # H = diag(4, 1), g = (2, 3): S = (1, 4), mean curvature 2. The stiff direction takes the
    # full Newton step -2/4; the soft one is capped at c / |g_e| = 0.2 / 3.
    hessian = torch.tensor([[[4.0, 0.0], [0.0, 1.0]]], dtype=F64)
    gradient = torch.tensor([[2.0, 3.0]], dtype=F64)
    dx = sine.saddle_free_newton(gradient, hessian, loss_change_limit=0.2)
    torch.testing.assert_close(dx, torch.tensor([[-0.5, -0.2 / 3]], dtype=F64))
    unlimited = sine.saddle_free_newton(gradient, hessian, loss_change_limit=None)
    torch.testing.assert_close(unlimited, torch.tensor([[-0.5, -3.0]], dtype=F64))
    # Negative curvature: plain Newton -g/S = +1 would climb; the step is flipped and capped.
    hessian = torch.tensor([[[-1.0, 0.0], [0.0, 2.0]]], dtype=F64)
    gradient = torch.tensor([[1.0, 1.0]], dtype=F64)
    dx = sine.saddle_free_newton(gradient, hessian, loss_change_limit=0.2)
    torch.testing.assert_close(dx, torch.tensor([[-0.2, -0.5]], dtype=F64))
    # Equal eigenvalues do not exceed their geometric mean: both directions are capped.
    isotropic = sine.saddle_free_newton(gradient, 2 * torch.eye(2, dtype=F64)[None], 0.2)
    torch.testing.assert_close(isotropic, torch.tensor([[-0.2, -0.2]], dtype=F64))
    # Rotated basis: the rule acts on eigen-components, not on coordinates.
    rotation = torch.tensor([[1.0, -1.0], [1.0, 1.0]], dtype=F64) / math.sqrt(2)
    rotated = sine.saddle_free_newton(
        gradient @ rotation.T, rotation @ hessian @ rotation.T, loss_change_limit=0.2
    )
    torch.testing.assert_close(rotated, dx @ rotation.T)


def _points_near_saddles(n: int, xi: float, phi: float, seed: int):
    """Predictions whose u_1 lies within 0.1 of a crest or trough of the sine (cos(u_1) = 0),
    where L has saddle points; with |y*_1| < 1 these are maxima of L along u_1."""
    generator = _generator(seed)
    y_target = sine.sample(n, generator, dtype=F64) * 0.9
    crest = math.pi / 2 + math.pi * torch.randint(-5, 6, (n,), generator=generator).to(F64)
    u_1 = crest + 0.1 * (torch.rand(n, generator=generator, dtype=F64) * 2 - 1)
    u_2 = y_target[:, 1] + 0.03 * torch.randn(n, generator=generator, dtype=F64)
    u = torch.stack([u_1, u_2], dim=1)
    cos, sin = math.cos(phi), math.sin(phi)
    rotation = torch.tensor([[cos, -sin], [sin, cos]], dtype=F64)
    scale = torch.tensor([10.0 / xi, 10.0 * xi], dtype=F64)
    return (u / scale) @ rotation, y_target


@pytest.mark.parametrize("xi, phi", CONDITIONS)
def test_saddle_free_newton_always_descends(xi, phi):
    x_random, y_random = _sine_points(200, xi)
    x_saddle, y_saddle = _points_near_saddles(200, xi, phi, seed=2)
    x, y_target = torch.cat([x_random, x_saddle]), torch.cat([y_random, y_saddle])
    gradient, hessian = sine.loss_gradient_hessian(x, y_target, xi, phi)
    dx = sine.saddle_free_newton(gradient, hessian)
    assert ((dx * gradient).sum(dim=1) <= 0).all()
    unlimited = sine.saddle_free_newton(gradient, hessian, loss_change_limit=None)
    assert ((unlimited * gradient).sum(dim=1) <= 0).all()
    # The test points do contain places where the plain Newton step climbs.
    newton = -torch.linalg.solve(hessian, gradient)
    assert ((newton * gradient).sum(dim=1) > 0).sum() > 50
    # A small enough multiple of the step lowers the loss of every example.
    loss = _sine_loss(x, y_target, xi, phi)
    moving = gradient.norm(dim=1) > 1e-9
    decreased = torch.zeros(len(x), dtype=torch.bool)
    for k in range(30):
        decreased |= _sine_loss(x + 0.5**k * dx, y_target, xi, phi) < loss
    assert decreased[moving].all()
    # The full step already lowers the loss of most examples.
    assert (_sine_loss(x + dx, y_target, xi, phi) < loss)[moving].float().mean() > 0.9


def test_saddle_free_newton_converges_to_a_solution():
    xi, phi = 10.0, math.pi / 4
    x, y_target = _sine_points(100, xi, seed=4)
    for _ in range(200):
        x = x + sine.saddle_free_newton(*sine.loss_gradient_hessian(x, y_target, xi, phi))
    assert _sine_loss(x, y_target, xi, phi).max() < 1e-12


# --- exp ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, y_target", [(0.0, math.exp(-1)), (-3.0, math.exp(-1)), (-1.0, 0.6), (-5.0, 1e-5)]
)
def test_exp_newton_matches_scalar_formula(x, y_target):
    g = (math.exp(x) - y_target) * math.exp(x)
    h = 2 * math.exp(2 * x) - y_target * math.exp(x)
    expected = -math.copysign(abs(g / h), g)
    x_tensor, y_tensor = torch.tensor([[x]], dtype=F64), torch.tensor([[y_target]], dtype=F64)
    dx = exponential.newton_update(x_tensor, y_tensor).item()
    assert dx == pytest.approx(expected, rel=1e-12)
    clipped = exponential.newton_update(x_tensor, y_tensor, clip=0.1).item()
    assert clipped == pytest.approx(math.copysign(min(abs(expected), 0.1), expected), rel=1e-12)


def test_exp_newton_flips_uphill_steps():
    # Below e^x = y*/2 the curvature is negative: plain Newton -g/h would move away.
    x, y_target = torch.tensor([[-4.0]], dtype=F64), torch.tensor([[math.exp(-1)]], dtype=F64)
    assert exponential.newton_update(x, y_target).item() > 0


@pytest.mark.parametrize("x_true", [-11.0, -6.0, -0.5])
@pytest.mark.parametrize("offset", [-0.5, 0.5, 1.0])
def test_exp_newton_converges_in_few_iterations(x_true, offset):
    y_target = torch.tensor([[math.exp(x_true)]], dtype=F64)
    x = torch.tensor([[x_true + offset]], dtype=F64)
    for _ in range(10):
        x = x + exponential.newton_update(x, y_target)
    assert x.item() == pytest.approx(x_true, abs=1e-10)


# --- wave packet --------------------------------------------------------------------------


def test_wave_packet_forward_shape_and_values():
    t0 = torch.tensor([[100.0], [40.0]], dtype=F64)
    y = wave_packet.forward(t0)
    assert y.shape == (2, 1, 256)
    assert y[0, 0, 100].item() == pytest.approx(0.0, abs=1e-12)
    assert y[1, 0, 40].item() == pytest.approx(0.0, abs=1e-12)
    crest = 100.0 + math.pi / (2 * 0.7)
    y_crest = wave_packet.forward(t0[:1], t=torch.tensor([crest], dtype=F64))
    assert y_crest.item() == pytest.approx(math.exp(-0.5 * (crest - 100.0) ** 2 / 20.0**2))
    expected_110 = math.sin(0.7 * 10.0) * math.exp(-0.5 * 100.0 / 400.0)
    assert y[0, 0, 110].item() == pytest.approx(expected_110)
    assert y[0, 0].abs().max() <= 1


def test_wave_packet_sample():
    t0, y = wave_packet.sample(500, _generator(7), dtype=F64)
    assert t0.shape == (500, 1) and y.shape == (500, 1, 256)
    assert t0.min() >= 25.6 and t0.max() < 128.0
    noise = y - wave_packet.forward(t0)
    assert noise.std().item() == pytest.approx(0.1, rel=0.02)
    assert noise.mean().abs().item() < 0.002
    torch.testing.assert_close(y, wave_packet.sample(500, _generator(7), dtype=F64)[1])


def test_lbfgsb_finds_packets_near_the_guess_only():
    """The paper's point: from t0 = 76.8 L-BFGS-B fits a packet at 80 exactly but not one
    at 30 (a local optimum, stuck several periods away)."""
    t0_true = torch.tensor([[80.0], [30.0]], dtype=F64)
    fitted = wave_packet.fit_lbfgsb(wave_packet.forward(t0_true), t0_init=76.8)
    assert fitted.shape == (2, 1) and fitted.dtype == F64
    assert fitted[0].item() == pytest.approx(80.0, abs=1e-4)
    assert abs(fitted[1].item() - 30.0) > 5.0


def test_lbfgsb_on_noisy_packets():
    t0_true, y_target = wave_packet.sample(4, _generator(8), dtype=torch.float32)

    def loss(t0):
        return ((wave_packet.forward(t0.double()) - y_target.double()) ** 2).sum(dim=(1, 2))

    fitted = wave_packet.fit_lbfgsb(y_target)
    assert fitted.dtype == torch.float32
    assert (loss(fitted) < loss(torch.full_like(fitted, 76.8))).all()
    # Started at the true offset, the fit stays within the noise-induced error.
    near = wave_packet.fit_lbfgsb(y_target[:1], t0_init=t0_true[0].item())
    assert near.item() == pytest.approx(t0_true[0].item(), abs=0.2)
