"""The sine, exp, fluid and wave-packet problems and the FNO / conv1d network configs."""
from __future__ import annotations

import io
import math

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config
from sip_train.module import InverseProblemModule, build_components
from sip_train.physics import exponential, fluid, sine
from sip_train.problems.exp import Exp
from sip_train.problems.fluid import Fluid
from sip_train.problems.sine import Sine
from sip_train.problems.wavepacket import WavePacket
from sip_train.run import ConfigError, train

F64 = torch.float64
#: The paper's network of each of these problems (every problem x rule is trained in test_rules.py,
#: every problem x network in test_every_network.py, both discovered from conf/).
DEFAULT_NETWORK = {"sine": "MLP", "exp": "MLP", "wavepacket": "Conv1dNet", "fluid": "UNet"}
#: Overrides that make each problem test-sized.
TINY_PROBLEM = {
    "sine": [],
    "exp": [],
    "wavepacket": ["problem.lbfgsb_max_iter=50"],
    "fluid": ["problem.resolution=8", "network.levels=2"],
}


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- SIP without a hand-written inverse ----------------------------------------------------


def test_wavepacket_has_no_inverse_update_so_inverse_problem_fails_at_start_up(tiny_config):
    with pytest.raises(ConfigError, match="inverse=problem needs a hand-written inverse update, which problem WavePacket"):
        train(tiny_config("problem=wavepacket", "optimizer=sip", "inverse=problem"))


# --- configs --------------------------------------------------------------------------------


@pytest.mark.parametrize("problem", sorted(DEFAULT_NETWORK))
def test_problem_configs_select_their_paper_network_and_batch(problem):
    cfg = compose_config([f"problem={problem}", "optimizer=adam", *TINY_PROBLEM[problem]])
    assert cfg.network._target_.rsplit(".", 1)[-1] == DEFAULT_NETWORK[problem]
    assert cfg.data.batch_size == {"sine": 100, "exp": 100, "wavepacket": 100, "fluid": 64}[problem]
    problem_obj, network, _ = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    x_true, y_target, *_ = problem_obj.sample(3, _generator())
    x = problem_obj.prepare_prediction(network(problem_obj.network_input(y_target)), y_target)
    assert x.shape == x_true.shape == (3, *problem_obj.x_shape)
    # the command line still chooses another network
    assert compose_config([f"problem={problem}", "network=mlp"]).network._target_.endswith("MLP")
    assert compose_config([f"problem={problem}", "network=unet"]).network._target_.endswith("UNet")


@pytest.mark.parametrize("problem", ["wavepacket", "fluid"])
def test_training_runs_build_the_paper_network_of_the_problem(problem, tiny_config):
    cfg = tiny_config(f"problem={problem}", "optimizer=adam")
    network = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, 0).network
    if problem == "wavepacket":
        assert (network.low, network.high) == (25.6, 128.0)
    else:
        assert sum(p.numel() for p in network.parameters()) == 49_570


def test_paper_network_sizes_and_settings():
    fluid_cfg = compose_config(["problem=fluid"])
    _, unet, _ = build_components(fluid_cfg.problem, fluid_cfg.optimizer, fluid_cfg.network, 0)
    assert sum(p.numel() for p in unet.parameters()) == 49_570
    exp_cfg = compose_config(["problem=exp"])
    assert list(exp_cfg.network.hidden) == [16, 64, 16] and exp_cfg.network.activation == "sigmoid"
    assert isinstance(instantiate(exp_cfg.network, in_shape=(1,), out_shape=(1,)).layers[2], torch.nn.Sigmoid)
    wave_cfg = compose_config(["problem=wavepacket", "problem.t0_range=[10.0,20.0]"])
    network = instantiate(wave_cfg.network, in_shape=(1, 256), out_shape=(1,))
    assert (network.low, network.high) == (10.0, 20.0)
    assert compose_config(["problem=sine"]).problem.batch_reduction == "mean"
    assert compose_config(["problem=exp"]).problem.batch_reduction == "sum"
    assert compose_config(["problem=fluid"]).problem.batch_reduction == "mean"


@pytest.mark.parametrize("problem", ["poisson", "heat", "fluid"])
def test_fno_fits_every_grid_problem(problem):
    cfg = compose_config([f"problem={problem}", "optimizer=adam", "network=fno", "problem.resolution=16",
                          "network.modes=4"])
    problem_obj, network, _ = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    _, y_target, *_ = problem_obj.sample(2, _generator())
    assert network(problem_obj.network_input(y_target)).shape == (2, *problem_obj.x_shape)
    paper = compose_config([f"problem={problem}", "optimizer=adam", "network=fno"])
    if problem != "fluid":  # one channel in and out: the paper's count
        _, paper_network, _ = build_components(paper.problem, paper.optimizer, paper.network, 0)
        assert sum(p.numel() for p in paper_network.parameters()) == 1_188_353


def test_fno_trains_on_poisson(tiny_config):
    summary = train(tiny_config("problem=poisson", "network=fno", "problem.resolution=16", "network.modes=4",
                                "optimizer=sip", "figure_examples=0"))
    assert summary["status"] == "completed" and math.isfinite(summary["x_l1"])


def test_conv1d_network_rejects_grid_problems_clearly(tiny_config):
    with pytest.raises(ConfigError, match="^network=conv1d needs 1D signals"):
        train(tiny_config("problem=heat", "network=conv1d"))


# --- figures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "problem",
    [Sine(), Exp(), WavePacket(lbfgsb_max_iter=20), Fluid(resolution=8)],
    ids=["sine", "exp", "wavepacket", "fluid"],
)
def test_figures_render(problem):
    x_true, y_target, *observed = problem.sample(2, _generator())
    x = problem.prepare_prediction(x_true + 0.1 * torch.randn(x_true.shape, generator=_generator(1)), y_target)
    figure = problem.figure(x, x_true, problem.simulate(x, *observed), y_target, *observed)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    assert buffer.tell() > 1000 and len(figure.axes) >= 1


# --- sine -----------------------------------------------------------------------------------


def test_sine_samples_solutions_and_measures_distance_to_the_nearest_one():
    problem = Sine(xi=10.0, phi=30.0)
    x_true, y_target = problem.sample(64, _generator())
    torch.testing.assert_close(problem.simulate(x_true), y_target, rtol=0, atol=1e-5)
    exact = problem.metrics(x_true, x_true, problem.simulate(x_true), y_target)
    assert exact["rel_accuracy"].max() < 1e-6 and exact["x_l1"].max() < 1e-5
    # moving a solution by a small step along x_1 (far less than half the period): the error is
    # the distance to that solution, relative to xi
    shifted = x_true + torch.tensor([0.01, 0.0])
    metrics = problem.metrics(shifted, x_true, problem.simulate(shifted), y_target)
    torch.testing.assert_close(metrics["rel_accuracy"], torch.full((64,), 0.01 / 10.0), rtol=1e-3, atol=0)
    torch.testing.assert_close(metrics["x_l1"], torch.full((64,), 0.01), rtol=1e-3, atol=0)


def test_sine_update_is_the_saddle_free_newton_step_in_radians():
    problem = Sine(xi=5.0, phi=45.0, loss_change_limit=0.2)
    x = torch.randn(16, 2, generator=_generator(), dtype=F64)
    y_target = sine.sample(16, _generator(1), dtype=F64)
    gradient, hessian = sine.loss_gradient_hessian(x, y_target, 5.0, math.pi / 4)
    expected = sine.saddle_free_newton(gradient, hessian, 0.2)
    torch.testing.assert_close(problem.inverse_update(x, problem.simulate(x), y_target), expected)


def test_sine_update_of_float32_predictions_moves_along_the_weak_direction_at_xi_100():
    """The Hessian's eigenvalues span xi^4 = 1e8: in float32 the weak one rounds to 0 and the step
    along it would vanish, so the problem computes the step in float64."""
    problem = Sine(xi=100.0, phi=45.0)
    x_true, y_target = problem.sample(16, _generator())
    x = x_true + torch.tensor([10.0, -10.0]) / 2**0.5  # off the solutions along the weak (rotated x_1) axis
    dx = problem.inverse_update(x, problem.simulate(x), y_target)
    assert dx.dtype == torch.float32
    exact = problem.inverse_update(x.double(), problem.simulate(x.double()), y_target.double())
    torch.testing.assert_close(dx.double(), exact, rtol=1e-5, atol=1e-6)
    assert dx.norm(dim=1).min() > 0.1


def test_sine_sip_reaches_the_solutions_in_100_steps_where_adam_barely_moves(tiny_config, tmp_path):
    short = ["problem=sine", "trainer.max_steps=100", "trainer.val_check_interval=100", "data.batch_size=32",
             "data.val_size=64", "data.val_batch_size=64", "figure_examples=0"]
    curves = {}
    for name, rule in (("sip", ["optimizer=sip", "optimizer.proxy_norm=l1"]), ("adam", ["optimizer=adam"])):
        train(tiny_config(*short, *rule, f"run_dir={tmp_path / name}"))
        curves[name] = pd.read_csv(tmp_path / name / "metrics.csv")["val/rel_accuracy"].dropna().tolist()
    assert curves["sip"][0] == curves["adam"][0]
    assert curves["sip"][-1] < 0.25 * curves["sip"][0]
    assert curves["sip"][-1] < 0.5 * curves["adam"][-1]


# --- exp ------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [None, 0.1])
def test_exp_update_is_the_clipped_newton_step(clip):
    problem = Exp(clip=clip)
    x_true, y_target = problem.sample(32, _generator())
    x = torch.zeros_like(x_true) - 5.0
    dx = problem.inverse_update(x, problem.simulate(x), y_target)
    torch.testing.assert_close(dx, exponential.newton_update(x, y_target, clip))
    assert (torch.sign(dx) == torch.sign(x_true - x)).all()  # L is unimodal: Newton points at x*
    if clip is not None:
        assert dx.abs().max() <= clip


# --- wave packet ----------------------------------------------------------------------------


def test_wavepacket_baseline_metrics_find_a_centred_packet_and_miss_a_far_one():
    problem = WavePacket(noise=0.0)
    x_true = torch.tensor([[77.5], [30.0]])
    y_target = problem.simulate(x_true)
    reference = problem.reference_metrics(x_true, y_target)
    assert set(reference) == {"lbfgsb_x_l1", "lbfgsb_y_l2"}
    assert reference["lbfgsb_x_l1"][0] < 1e-3 and reference["lbfgsb_y_l2"][0] < 1e-6
    assert reference["lbfgsb_x_l1"][1] > 5  # far from the initial guess L-BFGS-B gets stuck
    torch.testing.assert_close(problem.fit_lbfgsb(y_target)[:1], x_true[:1], rtol=0, atol=1e-3)


# --- fluid ----------------------------------------------------------------------------------


def test_fluid_unknown_is_the_velocity_and_the_marker_is_an_observed_input():
    problem = Fluid(resolution=16)
    v0_true, y_target, m0 = problem.sample(3, _generator())
    assert problem.x_shape == v0_true.shape[1:] == (2, 16, 16) and y_target.shape == (3, 2, 16, 16)
    torch.testing.assert_close(m0[:, 0], y_target[:, 0], rtol=0, atol=0)  # y* = (m0, mt)
    torch.testing.assert_close(problem.simulate(v0_true, m0), y_target, rtol=0, atol=1e-5)
    guess = torch.zeros(3, 2, 16, 16)
    y, dx = problem.simulate_and_update(guess, y_target, m0)
    torch.testing.assert_close(y, problem.simulate(guess, m0), rtol=0, atol=0)
    torch.testing.assert_close(dx, problem.inverse_update(guess, y, y_target, m0), rtol=0, atol=0)
    estimate = fluid.sip_estimate(guess, y_target[:, :1], y_target[:, 1:])
    assert dx.shape == guess.shape
    torch.testing.assert_close(guess + dx, estimate)
    # the estimate moves v0 towards the truth
    assert (fluid.gt_v0_l1(estimate, v0_true) < fluid.gt_v0_l1(guess, v0_true)).all()


def test_fluid_loss_and_metrics():
    problem = Fluid(resolution=16)
    x_true, y_target, m0 = problem.sample(2, _generator())
    x = x_true + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    y = problem.simulate(x, m0)
    metrics = problem.metrics(x, x_true, y, y_target, m0)
    assert set(metrics) == {"x_l1", "gt_v0_l1", "y_l2", "marker_loss"}  # training: no extra simulations
    torch.testing.assert_close(metrics["x_l1"], torch.full((2,), 7.0 * 256))
    torch.testing.assert_close(metrics["gt_v0_l1"], torch.full((2,), 5.0 * 256))
    torch.testing.assert_close(metrics["marker_loss"], problem.y_loss(y, y_target))
    assert (metrics["marker_loss"] > problem.y_loss(y_target, y_target)).all()
    problem.eval()
    validation = problem.metrics(x, x_true, y, y_target, m0)
    assert validation["gt_v_l1"].shape == (2,) and (validation["gt_v_l1"] > validation["gt_v0_l1"]).all()
    exact = problem.metrics(x_true, x_true, y_target, y_target, m0)
    assert exact["gt_v_l1"].max() == 0 and exact["x_l1"].max() == 0


def test_fluid_gradient_reaches_the_velocity_through_all_steps():
    problem = Fluid(resolution=8)
    _, y_target, m0 = problem.sample(2, _generator())
    v0 = torch.randn(2, 2, 8, 8, generator=_generator(1), requires_grad=True)
    loss = problem.physics_loss(v0, y_target, m0).sum()
    (gradient,) = torch.autograd.grad(loss, v0)
    assert gradient.abs().sum() > 0 and torch.isfinite(gradient).all()


def test_fluid_rejects_resolutions_the_data_cannot_use():
    with pytest.raises(ValueError, match="problem.resolution=10 is invalid"):
        Fluid(resolution=10)
