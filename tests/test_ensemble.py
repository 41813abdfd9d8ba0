"""Ensembles: every member trains, logs, checkpoints and ends as its single run would (within float32
round-off), diverges alone, and continues alone under the normal trainer."""
from __future__ import annotations

import runpy
import sys

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY
from sip_train.ensemble.grouping import group_key, why_single
from sip_train.ensemble.optimizers import STACKED, member_group
from sip_train.ensemble.problem import FoldedProblem, fold_batches, member_rows
from sip_train.ensemble.training import train_ensemble
from sip_train.problems.oscillators import Oscillators
from sip_train.run import train
from sip_train.summary import read_summary

FAST = ["trainer.max_steps=5", "trainer.val_check_interval=3", "figure_examples=0"]

def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["time/step_ms"], errors="ignore")


OPTIMIZERS = [
    (torch.optim.Adam, [dict(lr=1e-3), dict(lr=3e-3, betas=(0.8, 0.99)), dict(lr=1e-2, eps=1e-6)]),
    (torch.optim.Adam, [dict(lr=1e-3, weight_decay=0.1), dict(lr=3e-3, weight_decay=0.01)]),
    (torch.optim.SGD, [dict(lr=1e-2, momentum=0.9), dict(lr=3e-2, momentum=0.5, dampening=0.1)]),
    (torch.optim.SGD, [dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.1), dict(lr=3e-2, momentum=0.5, weight_decay=0.01,
                                                                                         nesterov=True)]),
    (torch.optim.SGD, [dict(lr=1e-2), dict(lr=3e-2)]),
    (torch.optim.Adagrad, [dict(lr=1e-2), dict(lr=3e-2, lr_decay=0.1), dict(lr=1e-2, initial_accumulator_value=0.1)]),
    (torch.optim.Adadelta, [dict(lr=1.0, weight_decay=0.2), dict(lr=0.5, rho=0.8, weight_decay=0.1)]),
    (torch.optim.RMSprop, [dict(lr=1e-3), dict(lr=3e-3, alpha=0.9)]),
    (torch.optim.RMSprop, [dict(lr=1e-3, momentum=0.9, centered=True), dict(lr=3e-3, momentum=0.5, centered=True)]),
]


@pytest.mark.parametrize("optimizer, settings", OPTIMIZERS, ids=lambda v: getattr(v, "__name__", ""))
def test_stacked_optimizers_step_each_member_bit_for_bit_as_torch_optim(optimizer, settings):
    generator = torch.Generator().manual_seed(0)
    shapes = [(5, 3), (3,), (7,)]
    alone = [[torch.randn(shape, generator=generator, requires_grad=True) for shape in shapes] for _ in settings]
    optimizers = [optimizer(params, **options) for params, options in zip(alone, settings)]
    stacked_params = {str(i): torch.stack([p[i].detach() for p in alone]).requires_grad_() for i in range(len(shapes))}
    stacked = STACKED[optimizer](stacked_params, [member_group(o) for o in optimizers])
    for _ in range(4):
        grads = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in settings]
        for params, member_grads, single in zip(alone, grads, optimizers):
            for param, grad in zip(params, member_grads):
                param.grad = grad.clone()
            single.step()
        for i in range(len(shapes)):
            stacked_params[str(i)].grad = torch.stack([member_grads[i] for member_grads in grads])
        stacked.step()
    for k, single in enumerate(optimizers):
        assert all(torch.equal(stacked_params[str(i)][k], alone[k][i]) for i in range(len(shapes)))
        saved, reference = stacked.member_state_dict(k), single.state_dict()
        assert saved["param_groups"] == reference["param_groups"]
        assert saved["state"].keys() == reference["state"].keys()
        for index, entry in reference["state"].items():
            assert saved["state"][index].keys() == entry.keys()
            assert all(torch.equal(saved["state"][index][key], value) for key, value in entry.items())


def test_folded_problems_simulate_each_members_rows_with_its_observed_inputs():
    generator = torch.Generator().manual_seed(0)
    slow, fast = Oscillators(steps=8, dt=0.125), Oscillators(steps=8, dt=0.25)
    batches = [slow.sample(3, generator) for _ in range(3)]
    folded_batch = fold_batches(batches)
    assert folded_batch[0] is None  # no true control: x* stays absent when folded
    control = torch.randn(9, 8, generator=generator)
    folded = FoldedProblem([slow, slow, fast]).simulate(control, *folded_batch[2:])
    alone = [problem.simulate(control[member_rows(k, 3)], *batch[2:])
             for k, (problem, batch) in enumerate(zip([slow, slow, fast], batches))]
    assert torch.equal(folded, torch.cat(alone))
    assert not torch.allclose(alone[2], slow.simulate(control[member_rows(2, 3)], *batches[2][2:]))


CASES = {  # problem, rule, a problem parameter the second member changes
    "sine-adam": ("problem=sine", "optimizer=adam", "problem.xi=100"),
    "sine-sip": ("problem=sine", "optimizer=sip", "problem.xi=30"),
    "exp-sip": ("problem=exp", "optimizer=sip", "problem.x_range=[-6.0,0.0]"),
    "oscillators-adam": ("problem=oscillators", "optimizer=adam", "data.train_size=16 problem.steps=16"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_member_logs_what_its_single_run_logs(case, tiny_config, tmp_path):
    problem, rule, parameter = CASES[case]
    members = [["seed=0"], ["seed=1", "optimizer.lr=3e-3", parameter]]
    if case == "oscillators-adam":  # a finite training set: each member cycles its own
        members = [["seed=0", *parameter.split()], ["seed=1", "optimizer.lr=3e-3", *parameter.split()]]
    jobs = []
    for i, extra in enumerate(members):
        overrides = [problem, rule, *FAST, *extra]
        train(tiny_config(*overrides, f"run_dir={tmp_path / f'single{i}'}"))
        jobs.append((tiny_config(*overrides, f"run_dir={tmp_path / f'member{i}'}"), None))
    summaries = train_ensemble(jobs)
    for i, summary in enumerate(summaries):
        single, member = metrics(tmp_path / f"single{i}"), metrics(tmp_path / f"member{i}")
        assert list(member.columns) == list(single.columns)
        assert member["step"].tolist() == single["step"].tolist()
        pd.testing.assert_frame_equal(member, single, check_exact=False, rtol=2e-5, atol=1e-7)
        alone = read_summary(tmp_path / f"single{i}")
        assert summary == read_summary(tmp_path / f"member{i}")
        assert summary.keys() == alone.keys() and summary["inverse"] == alone["inverse"]
        assert (tmp_path / f"member{i}/.hydra/config.yaml").is_file() and (tmp_path / f"single{i}/.hydra/config.yaml").is_file()
        assert (tmp_path / f"member{i}/figures/learning_curves.png").is_file()
        assert (summary["status"], summary["exit_code"], summary["steps"]) == ("completed", 0, 5)
        assert {k: summary[k] for k in ("problem", "optimizer", "seed", "lr", "metrics_step")} == \
               {k: alone[k] for k in ("problem", "optimizer", "seed", "lr", "metrics_step")}
        assert summary[alone["primary_metric"]] == pytest.approx(alone[alone["primary_metric"]], rel=2e-5)


def test_a_diverging_member_stops_alone_and_leaves_the_others_untouched(tiny_config, tmp_path):
    good = ["problem=sine", "optimizer=sgd", *FAST, "seed=0"]
    bad = ["problem=sine", "optimizer=sgd", *FAST, "seed=1", "optimizer.lr=1e6"]
    train_ensemble([(tiny_config(*good, f"run_dir={tmp_path / 'alone'}"), None)])
    summaries = train_ensemble([(tiny_config(*good, f"run_dir={tmp_path / 'good'}"), None),
                                (tiny_config(*bad, f"run_dir={tmp_path / 'bad'}"), None)])
    assert (summaries[0]["status"], summaries[1]["status"], summaries[1]["exit_code"]) == ("completed", "diverged", 3)
    assert summaries[1]["diverged_step"] <= summaries[1]["steps"] < 5
    last = torch.load(summaries[1]["last_checkpoint"], weights_only=False)
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())
    assert metrics(tmp_path / "good").equals(metrics(tmp_path / "alone"))  # bit for bit


def test_a_member_continues_alone_under_the_normal_trainer(tiny_config, tmp_path):
    common = ["problem=sine", "optimizer=adam", "figure_examples=0", "trainer.val_check_interval=3"]
    members = [["seed=0"], ["seed=1", "optimizer.lr=3e-3"]]
    train_ensemble([(tiny_config(*common, *extra, "trainer.max_steps=4", f"run_dir={tmp_path / f'm{i}'}"), None)
                    for i, extra in enumerate(members)])
    train(tiny_config(*common, "seed=0", "trainer.max_steps=4", f"run_dir={tmp_path / 'single'}"))
    ours = torch.load(tmp_path / "m0/checkpoints/last.ckpt", weights_only=False)
    theirs = torch.load(tmp_path / "single/checkpoints/last.ckpt", weights_only=False)
    assert ours.keys() == theirs.keys()
    assert ours["loops"] == theirs["loops"]
    assert (ours["epoch"], ours["global_step"], ours["hyper_parameters"]) == (theirs["epoch"], 4, theirs["hyper_parameters"])
    assert ours["callbacks"].keys() == theirs["callbacks"].keys()
    assert ours["run_identity"]["seed"] == 0 and ours["run_identity"].keys() == theirs["run_identity"].keys()
    for run in ("m0", "single"):  # both extended by the normal trainer
        summary = train(tiny_config(*common, "seed=0", "trainer.max_steps=7", f"run_dir={tmp_path / run}"))
        assert (summary["status"], summary["steps"], summary["sessions"]) == ("completed", 7, 2)
    pd.testing.assert_frame_equal(metrics(tmp_path / "m0"), metrics(tmp_path / "single"), check_exact=False, rtol=2e-5)


def test_only_vectorisable_values_share_a_group_and_other_rules_run_alone(tiny_config):
    base = ["problem=sine", "optimizer=adam"]
    key = group_key(tiny_config(*base))
    assert group_key(tiny_config(*base, "seed=3", "optimizer.lr=0.1", "problem.xi=100", "run_dir=/elsewhere")) == key
    assert group_key(tiny_config(*base, "network.hidden=[8]")) != key
    sgd = group_key(tiny_config("problem=sine", "optimizer=sgd"))
    assert group_key(tiny_config("problem=sine", "optimizer=sgd", "optimizer.optimizer.momentum=0")) != sgd
    assert why_single(tiny_config(*base)) is None
    assert why_single(tiny_config("problem=sine", "optimizer=sip", "inverse=lbfgs")) is None
    assert "rule" in why_single(tiny_config("problem=oscillators", "optimizer=hig"))
    assert "max_time" in why_single(tiny_config(*base, "trainer.max_time=60"))
    assert "buffers" in why_single(tiny_config("problem=heat", "optimizer=adam", "problem.resolution=16"))
    assert "double backward" in why_single(tiny_config("problem=sine", "optimizer=adahessian"))


def test_the_ensemble_launcher_groups_what_it_can_and_runs_the_rest_alone(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), "-m", "problem=sine", "optimizer=adam", "seed=0,1",
                                      "trainer.max_time=null,60", *TINY, *FAST, "hydra/launcher=ensemble",
                                      f"hydra.sweep.dir={tmp_path}"])
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    printed = capfd.readouterr().out
    assert "ensemble: 2 jobs train together: #0, #2" in printed
    assert "ensemble: 2 job(s) run one by one: a wall-clock budget" in printed
    for number, (seed, max_time) in enumerate([(0, None), (0, 60), (1, None), (1, 60)]):
        overrides = OmegaConf.load(tmp_path / str(number) / ".hydra" / "overrides.yaml")
        assert f"seed={seed}" in overrides and f"trainer.max_time={max_time or 'null'}" in overrides
        assert read_summary(tmp_path / str(number))["status"] == "completed"
    for member, alone in ((0, 1), (2, 3)):  # the same job, with and without a wall-clock budget
        pd.testing.assert_frame_equal(metrics(tmp_path / str(member)), metrics(tmp_path / str(alone)),
                                      check_exact=False, rtol=2e-5)
