"""Every problem with every generic inverse solver: the update lowers the error, and SIP trains through train()."""
from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from conftest import compose_config, options
from sip_train.run import train

GENERIC = ["gauss_newton", "lbfgs", "gradient_descent"]
#: Overrides that make each problem test-sized (and cheap per solver iteration).
TINY_PROBLEM = {
    "poisson": ["problem.resolution=16"],
    "heat": ["problem.resolution=16"],
    "fluid": ["problem.resolution=8", "network.levels=2"],
    "wavepacket": ["problem.lbfgsb_max_iter=20"],
    "oscillators": ["problem.steps=16", "data.train_size=16"],
}
#: Settings a generic solver needs on a problem: gradient descent's lr is not scale-invariant (curvature of
#: Poisson's and the sine's losses up to ~1e2 and ~1e4), the fluid's L1-type loss needs strong GN damping, and
#: the oscillators' first undamped GN steps from a zero control are rejected (a damped retry is accepted).
SETTINGS = {("poisson", "gradient_descent"): ["inverse.lr=1e-3"], ("sine", "gradient_descent"): ["inverse.lr=1e-5"],
            ("fluid", "gauss_newton"): ["inverse.damping=10"],
            ("oscillators", "gauss_newton"): ["inverse.outer_iterations=4"]}
TINY_SOLVER = {"gauss_newton": ["inverse.iterations=5"], "lbfgs": ["inverse.iterations=4"],
               "gradient_descent": ["inverse.iterations=4"]}


@pytest.mark.parametrize("problem,inverse", list(itertools.product(options("problem"), GENERIC)))
def test_every_generic_inverse_update_lowers_every_problems_error(problem, inverse):
    """From estimates near the truth (or from a zero control where there is no true x), x + dx is better."""
    cfg = compose_config([f"problem={problem}", "optimizer=sip", f"inverse={inverse}", *TINY_PROBLEM.get(problem, []),
                          *SETTINGS.get((problem, inverse), [])])
    problem_obj, solver = instantiate(cfg.problem), instantiate(cfg.optimizer).inverse
    solver.check(problem_obj)
    generator = torch.Generator().manual_seed(0)
    x_true, y_target, *observed = problem_obj.sample(4, generator)
    metric = problem_obj.primary_metric
    if x_true is not None:  # a smooth error (a per-example offset of 1% of the spread), observable by every problem
        spread = x_true.std(0, keepdim=True).mean()
        offset = torch.randn(4, *(1,) * (x_true.dim() - 1), generator=generator, dtype=x_true.dtype)
        x = x_true + 0.01 * spread * offset
    else:  # no ground-truth x: start from a zero prediction
        x = problem_obj.prepare_prediction(torch.zeros(4, *problem_obj.x_shape), y_target)
    _, dx = solver.simulate_and_update(problem_obj, x, y_target, *observed)
    assert dx.shape == x.shape

    def error(estimate: torch.Tensor) -> float:
        y = problem_obj.simulate(estimate, *observed)
        return problem_obj.metrics(estimate, x_true, y, y_target, *observed)[metric].mean().item()

    assert error(x + dx) < error(x)


@pytest.mark.parametrize("problem,inverse", [("poisson", "gauss_newton"), ("fluid", "lbfgs"),
                                             ("wavepacket", "gradient_descent"), ("wavepacket", "auto")])
def test_sip_with_a_generic_inverse_trains_through_train(problem, inverse, tiny_config, tmp_path):
    cfg = tiny_config(f"problem={problem}", "optimizer=sip", f"inverse={inverse}", *TINY_PROBLEM.get(problem, []),
                      *TINY_SOLVER.get(inverse, []), "trainer.max_steps=2", "trainer.val_check_interval=2",
                      "figure_examples=0")
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert history.filter(like="train/").dropna(how="all").shape[0] == 2
    assert math.isfinite(summary[summary["primary_metric"]])
