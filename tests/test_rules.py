"""Update rules through the framework: every rule trains every problem; Hessian-free, AdaHessian and
normalised gradients behave as their equations say."""
from __future__ import annotations

import copy
import functools
import itertools
import math

import pandas as pd
import pytest
import torch
from conftest import compose_config, options
from hydra.utils import instantiate

from sip_train.module import build_components
from sip_train.physics import diffuse, poisson
from sip_train.problems.heat import Heat
from sip_train.problems.poisson import Poisson
from sip_train.rules.base import PlainStep
from sip_train.rules.hessian_free import (
    HessianFree,
    HessianFreeRule,
    levenberg_marquardt_damping,
)
from sip_train.rules.normalized import NormalizedGradient
from sip_train.run import ConfigError, train

# AdaHessian's documented usage is backward(create_graph=True); torch warns about the grad cycle.
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")

#: Generic learning rates that diverge on a problem, replaced by the paper's value for that problem.
PAPER_LR = {("poisson", "sgd"): 3e-12}
#: Test-sized Hessian-free settings (the full CG loop runs up to 250 iterations).
SMALL_CG = ["optimizer.optimizer.cg_max_iter=5", "optimizer.optimizer.cg_min_iter=2"]
#: Test-sized HIG budget: larger Jacobians are refused (wavepacket's 1024 x 17489 takes seconds per SVD).
SMALL_HIG = ["optimizer.memory_budget_gb=0.1"]
#: Three steps, validated (and drawn: figures on) once, at the end.
TINY_RUN = ["trainer.max_steps=3", "trainer.val_check_interval=100", "validate_at_start=false", "figure_examples=2"]


def tiny_size(problem: str) -> list[str]:
    """Overrides shrinking a problem to a 16x16 grid or 16 time steps (when it has them) with a network that fits
    its shapes."""
    cfg = compose_config([f"problem={problem}"])
    overrides = ["problem.resolution=16"] if "resolution" in cfg.problem else []
    overrides += ["problem.steps=16"] if "steps" in cfg.problem else []
    if len(instantiate(cfg.problem).x_shape) == 3:
        return [*overrides, "network=unet", "network.levels=2"]
    return [*overrides, "network=mlp"] if cfg.network._target_.endswith("UNet") else overrides


def rule_overrides(problem: str, optimizer: str) -> list[str]:
    lr = [f"optimizer.lr={PAPER_LR[problem, optimizer]}"] if (problem, optimizer) in PAPER_LR else []
    return [f"problem={problem}", f"optimizer={optimizer}", *tiny_size(problem), *lr,
            *(SMALL_CG if optimizer == "hessian_free" else []), *(SMALL_HIG if optimizer == "hig" else [])]


def train_log(run_dir) -> pd.DataFrame:
    """Rows of metrics.csv with training metrics, one per step."""
    return pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/objective"]).reset_index(drop=True)


def network_weights(checkpoint_path: str) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint_path, weights_only=False)["state_dict"]
    return {k.removeprefix("network."): v for k, v in state.items() if k.startswith("network.")}


@pytest.mark.parametrize("problem,optimizer", list(itertools.product(options("problem"), options("optimizer"))))
def test_every_rule_trains_every_problem_or_refuses_it_at_start_up(problem, optimizer, tiny_config, tmp_path):
    cfg = tiny_config(*rule_overrides(problem, optimizer), *TINY_RUN)
    try:
        _, initial_network, _ = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    except ValueError as refusal:
        assert f"optimizer={optimizer}" in str(refusal)
        with pytest.raises(ConfigError, match=f"optimizer={optimizer}"):
            train(cfg)
        return
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 3
    losses = train_log(tmp_path)["train/objective"]
    assert len(losses) == 3 and losses.map(math.isfinite).all()
    assert math.isfinite(summary[summary["primary_metric"]])
    trained = network_weights(summary["last_checkpoint"])
    assert any(not torch.equal(trained[name], value) for name, value in initial_network.named_parameters())
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["learning_curves.png", "val_step0000003.png"]


@pytest.mark.parametrize("curvature", ["ggn", "hessian"])
def test_hessian_free_logs_damping_that_follows_the_reduction_ratio(curvature, tiny_config, tmp_path):
    train(tiny_config(*rule_overrides("heat", "hessian_free"), *TINY_RUN, "trainer.max_steps=5",
                      "optimizer.optimizer.damping=0.01", f"optimizer.optimizer.curvature={curvature}"))
    log = train_log(tmp_path)
    assert log["train/damping"].iloc[0] == pytest.approx(0.01)
    damping, rho = log["train/damping"].tolist(), log["train/reduction_ratio"].tolist()
    for step in range(len(log) - 1):
        assert damping[step + 1] == pytest.approx(levenberg_marquardt_damping(damping[step], rho[step]), rel=1e-6)
    assert len(set(damping)) > 1  # the damping adapted
    assert log["train/cg_iterations"].between(1, 5).all()
    assert log["train/step_size"].between(0, 1).all() and (log["train/step_size"] > 0).any()


def test_hessian_free_resume_restores_damping_and_continues_the_same_run(tiny_config, tmp_path):
    overrides = [*rule_overrides("heat", "hessian_free"), *TINY_RUN, "optimizer.optimizer.damping=0.01"]
    first = train(tiny_config(*overrides, "trainer.max_steps=3", f"run_dir={tmp_path / 'first'}"))
    saved = torch.load(first["last_checkpoint"], weights_only=False)["optimizer_states"][0]
    saved_damping = saved["param_groups"][0]["damping"]
    assert saved_damping != pytest.approx(0.01)
    resumed = train(tiny_config(*overrides, "trainer.max_steps=5", f"ckpt_path={first['last_checkpoint']}",
                                f"run_dir={tmp_path / 'resumed'}"))
    straight = train(tiny_config(*overrides, "trainer.max_steps=5", f"run_dir={tmp_path / 'straight'}"))
    resumed_log, straight_log = train_log(tmp_path / "resumed"), train_log(tmp_path / "straight")
    assert resumed_log["step"].tolist() == [4, 5]
    assert resumed_log["train/damping"].iloc[0] == pytest.approx(saved_damping, rel=1e-6)
    assert resumed_log["train/damping"].tolist() == pytest.approx(straight_log["train/damping"].iloc[3:].tolist())
    resumed_weights, straight_weights = (network_weights(s["last_checkpoint"]) for s in (resumed, straight))
    for name, value in straight_weights.items():
        torch.testing.assert_close(resumed_weights[name], value, rtol=1e-5, atol=1e-7)


def test_a_hessian_free_step_leaves_batch_statistics_of_the_new_weights():
    """Running averages could not follow Hessian-free steps: they become the batch's statistics at the new weights."""
    problem = Poisson(resolution=8)
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                  torch.nn.Conv2d(4, 1, 3, padding=1))
    _, y_target = problem.sample(4, torch.Generator().manual_seed(3))
    initial = copy.deepcopy(network)
    initial_loss = problem.reduce(problem.physics_loss(initial(y_target), y_target))
    rule = HessianFreeRule(functools.partial(HessianFree, cg_max_iter=5), lr=1.0)
    result = rule.training_step(PlainStep(problem, network, rule), y_target)
    assert result["loss"] == pytest.approx(initial_loss.item())
    assert result["stats"]["step_size"] > 0 and result["stats"]["cg_iterations"] == 5
    assert not torch.equal(network[0].weight, initial[0].weight)
    features = network[0](y_target).detach()
    torch.testing.assert_close(network[1].running_mean, features.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(network[1].running_var, features.var(dim=(0, 2, 3)))
    assert network[1].momentum == 0.1 and network.training


def test_adahessian_trains_through_the_framework(tiny_config, tmp_path):
    summary = train(tiny_config(*rule_overrides("poisson", "adahessian"), "trainer.max_steps=20",
                                "trainer.val_check_interval=10", "data.batch_size=8", "figure_examples=0"))
    losses = train_log(tmp_path)["train/objective"]
    assert summary["status"] == "completed" and losses.map(math.isfinite).all()
    assert losses.iloc[-5:].mean() < 0.25 * losses.iloc[0]
    validation = pd.read_csv(tmp_path / "metrics.csv")["val/x_l1"].dropna()
    assert validation.iloc[-1] < validation.iloc[0]


def test_poisson_cg_solve_is_twice_differentiable_as_adahessian_needs():
    """Hessian-vector products of L(x) = 1/2 ||P(x) - y*||^2 through CG equal those through the exact solve."""
    generator = torch.Generator().manual_seed(0)
    x, y_target, v = (torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))

    def hessian_vector(solve) -> torch.Tensor:
        x_variable = x.clone().requires_grad_(True)
        loss = 0.5 * (solve(x_variable) - y_target).pow(2).sum()
        (gradient,) = torch.autograd.grad(loss, x_variable, create_graph=True)
        return torch.autograd.grad(gradient, x_variable, v)[0]

    exact = hessian_vector(poisson.solve_spectral)
    torch.testing.assert_close(hessian_vector(lambda x: poisson.solve_cg(x, 1e-10)), exact, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(exact, poisson.solve_spectral(poisson.solve_spectral(v)))  # H = P^T P, P symmetric


@pytest.mark.parametrize("problem,adjoint", [
    (Poisson(resolution=8), poisson.solve_spectral),
    (Heat(resolution=8), lambda r: diffuse.fourier(r, 8.0)),
], ids=["poisson", "heat"])
def test_normalized_gradient_sends_the_sign_of_the_physics_gradient_to_the_network(problem, adjoint):
    """P is self-adjoint on both problems, so dL/dx = P(P(x) - y*); the proxy's gradient in x is eta sign(dL/dx)."""
    x_true, y_target = problem.sample(3, torch.Generator().manual_seed(1))
    x = (x_true + 0.3 * torch.randn(x_true.shape, generator=torch.Generator().manual_seed(2),
                                    dtype=x_true.dtype)).requires_grad_(True)
    physics_gradient = adjoint(problem.simulate(x.detach()) - y_target)
    assert (physics_gradient.abs() > 1e-9).all()
    rule = NormalizedGradient(torch.optim.Adam, lr=1e-3, eta=0.5)
    with torch.no_grad():
        y, update = rule.simulate_and_update(problem, x.detach(), y_target)
    assert torch.equal(update, -physics_gradient.sign()) and not y.requires_grad
    per_example, y = rule.objective(problem, x, y_target)
    torch.testing.assert_close(y, problem.simulate(x.detach()))
    (proxy_gradient,) = torch.autograd.grad(per_example.sum(), x)
    torch.testing.assert_close(proxy_gradient, 0.5 * physics_gradient.sign())


def test_a_bad_hessian_free_setting_fails_at_start_up(tiny_config):
    with pytest.raises(ConfigError, match=r"optimizer.optimizer.curvature='newton' is invalid: choose one of "
                                          r"\['ggn', 'hessian'\]"):
        train(tiny_config("optimizer=hessian_free", "optimizer.optimizer.curvature=newton"))
