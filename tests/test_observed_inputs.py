"""Problems whose simulator needs observed inputs besides the unknowns (the fluid's initial marker, the
oscillators' initial state): x is what the network predicts, the observed inputs travel with the batch,
and every consumer (training, validation, generic inverses, iterative baselines) uses them the same way."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from conftest import TINY_PROBLEM, compose_config, options
from sip_train.data import SyntheticData
from sip_train.inverse.auto import Auto
from sip_train.inverse.problem import ProblemInverse
from sip_train.iterative import main
from sip_train.module import build_components
from sip_train.problems.base import InverseProblem
from sip_train.problems.fluid import Fluid
from sip_train.problems.oscillators import Oscillators
from sip_train.problems.poisson import Poisson
from sip_train.rules.base import PlainStep

#: (problem, rule) -> settings of a few updates on one fixed batch (the oscillators' default Gauss-Newton inverse
#: rejects its first undamped steps and costs seconds per update here: L-BFGS instead).
FIT = {("fluid", "sip"): ["optimizer.lr=1e-2"], ("fluid", "adam"): ["optimizer.lr=2e-2"],
       ("oscillators", "sip"): ["optimizer.lr=1e-2", "inverse=lbfgs", "inverse.iterations=3"],
       ("oscillators", "adam"): ["optimizer.lr=1e-2"]}


@pytest.mark.parametrize("problem,optimizer", list(FIT))
def test_a_rule_fits_a_batch_of_a_problem_with_observed_inputs(problem, optimizer):
    """A bare loop of the rule's own updates on one fixed batch lowers the problem's primary error (the fluid's
    x_l1, the oscillators' y_l2); the observed inputs are passed to the physics, never changed."""
    cfg = compose_config([f"problem={problem}", f"optimizer={optimizer}", *TINY_PROBLEM[problem], *FIT[problem, optimizer]])
    problem_obj, network, rule = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    x_true, y_target, observed = problem_obj.sample(4, torch.Generator().manual_seed(0))
    before = observed.clone()
    step = PlainStep(problem_obj, network, rule)

    def error() -> float:
        with torch.no_grad():
            x = step.predict(y_target)
            metrics = problem_obj.metrics(x, x_true, problem_obj.simulate(x, observed), y_target, observed)
        return metrics[problem_obj.primary_metric].mean().item()

    initial = error()
    for _ in range(10):
        result = rule.training_step(step, y_target, observed)
    assert result["x"].shape == (4, *problem_obj.x_shape) and torch.equal(observed, before)
    assert error() < 0.95 * initial


def test_a_batch_holds_the_observed_inputs_after_x_and_y_in_every_data_set():
    problem = Fluid(resolution=8)
    cpu = torch.device("cpu")
    for data in (SyntheticData(problem, batch_size=3, val_size=4, seed=1),
                 SyntheticData(problem, batch_size=3, val_size=4, seed=1, steps_per_draw=2),
                 SyntheticData(problem, batch_size=3, val_size=4, seed=1, train_size=5)):
        for v0, y_target, m0 in (data.train_batch(1, cpu), data.validation_set(cpu)):
            assert v0.shape[1:] == problem.x_shape and m0.shape == (len(v0), 1, 8, 8)
            torch.testing.assert_close(problem.simulate(v0, m0), y_target, rtol=0, atol=1e-5)
    x_true, y_target, initial_state = SyntheticData(Oscillators(steps=4), batch_size=3, train_size=5).train_batch(
        2, cpu)
    assert x_true is None and torch.equal(y_target, initial_state) and len(y_target) == 3


@pytest.mark.parametrize("problem", options("problem"))
def test_the_iterative_baselines_run_on_every_problem_and_lower_its_loss(problem, tmp_path):
    main([f"problem={problem}", *TINY_PROBLEM.get(problem, []), "data.val_size=2", "--iterations", "2",
          "--every", "1", "--gd-lr", "1e-4", "--x0", "0.1", "--out", str(tmp_path)])  # x = 0 is a fixed point of the fluid
    curves = pd.read_csv(tmp_path / "iterative_curves.csv")
    lbfgsb = curves[curves["method"] == "L-BFGS-B"]
    assert lbfgsb["iteration"].tolist() == [0, 1, 2]
    assert lbfgsb["y_l2"].iloc[-1] < lbfgsb["y_l2"].iloc[0]


class SimulatingPoisson(Poisson):
    """Provides its SIP update through `simulate_and_update` only."""

    def simulate_and_update(self, x: torch.Tensor, y_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.simulate(x)
        return y, Poisson.inverse_update(self, x, y, y_target)


def test_a_problem_overriding_either_update_hook_has_an_inverse_update():
    assert not InverseProblem.has_inverse_update() and not Oscillators.has_inverse_update()
    assert Poisson.has_inverse_update() and Fluid.has_inverse_update() and SimulatingPoisson.has_inverse_update()
    assert isinstance(Auto().choose(SimulatingPoisson(resolution=8)), ProblemInverse)
    ProblemInverse().check(SimulatingPoisson(resolution=8))  # accepted, not refused as "no inverse update"
