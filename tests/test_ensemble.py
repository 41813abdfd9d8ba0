"""Ensembles: every member trains, logs, checkpoints and ends as its single run would (within float32
round-off), diverges alone, is refused alone, stops on a signal and continues (together, or alone under the
normal trainer); the launcher hands groups and single jobs to its inner launcher (basic or joblib)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import io
import logging
import os
import runpy
import shlex
import shutil
import signal
import sys
import threading
import time

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from conftest import REPO, TINY, compose_config, write_sweep
from sip_train.ensemble.grouping import group_key, why_single
from sip_train.ensemble.optimizers import STACKED, member_group
from sip_train.ensemble.problem import FoldedProblem, fold_batches, member_rows
from sip_train.ensemble.training import train_ensemble
from sip_train.problems.oscillators import Oscillators
from sip_train.run import train
from sip_train.summary import read_summary
from sip_train.sweep.report import report

FAST = ["trainer.max_steps=5", "trainer.val_check_interval=3", "figure_examples=0"]
#: A multirun whose jobs differ in the seed only: one group (without the step-0 validation and the comparison a
#: multirun ends with, which these tests do not look at).
SWEEP = ["problem=sine", "optimizer=adam", "seed=0,1", *TINY, *FAST, "validate_at_start=false", "hydra/launcher=ensemble",
         "~hydra.callbacks.comparison"]
#: Two groups of SWEEP's members: a value that splits groups and changes no result (jobs #0, #2 and #1, #3).
TWO_GROUPS = ["divergence_check_every=10,11"]
#: Groups as jobs of Hydra's joblib launcher, two processes at once.
JOBLIB = ["hydra/launcher/inner=joblib", "hydra.launcher.inner.n_jobs=2"]


def metrics(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["time/step_ms"], errors="ignore")


def multirun(*arguments: str) -> str:
    """Run `train.py -m arguments` in this process; returns what its loggers printed."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(sys, "argv", [str(REPO / "train.py"), "-m", *arguments])
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    return printed.getvalue()


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory):
    """SWEEP with single jobs beside the group (a wall-clock budget), through the default (basic) inner launcher:
    jobs #0 and #2 train together, #1 and #3 alone. Returns (sweep dir, what it printed)."""
    sweep_dir = tmp_path_factory.mktemp("basic")
    return sweep_dir, multirun(*SWEEP, "trainer.max_time=null,60", f"hydra.sweep.dir={sweep_dir}")


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


@pytest.fixture(scope="module")
def case_runs(tmp_path_factory):
    """case -> (directory, summaries): each member of a 2-member ensemble (member0, member1) and its single run
    (single0, single1), computed once per module."""
    done = {}

    def run(case: str):
        if case not in done:
            directory = tmp_path_factory.mktemp(case)
            problem, rule, parameter = CASES[case]
            members = [["seed=0"], ["seed=1", "optimizer.lr=3e-3", parameter]]
            if case == "oscillators-adam":  # a finite training set: each member cycles its own
                members = [["seed=0", *parameter.split()], ["seed=1", "optimizer.lr=3e-3", *parameter.split()]]
            start = [] if case == "sine-adam" else ["validate_at_start=false"]  # one case compares the step-0 rows
            jobs = []
            for i, extra in enumerate(members):
                overrides = [*TINY, problem, rule, *FAST, *start, *extra]
                train(compose_config(overrides, directory / f"single{i}"))
                jobs.append((compose_config(overrides, directory / f"member{i}"), None))
            done[case] = directory, train_ensemble(jobs)
        return done[case]

    return run


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_member_logs_what_its_single_run_logs(case, case_runs):
    directory, summaries = case_runs(case)
    for i, summary in enumerate(summaries):
        single, member = metrics(directory / f"single{i}"), metrics(directory / f"member{i}")
        assert list(member.columns) == list(single.columns)
        assert member["step"].tolist() == single["step"].tolist()
        pd.testing.assert_frame_equal(member, single, check_exact=False, rtol=2e-5, atol=1e-7)
        alone = read_summary(directory / f"single{i}")
        assert summary == read_summary(directory / f"member{i}")
        assert summary.keys() == alone.keys() and summary["inverse"] == alone["inverse"]
        assert (directory / f"member{i}/.hydra/config.yaml").is_file() and (directory / f"single{i}/.hydra/config.yaml").is_file()
        assert (directory / f"member{i}/figures/learning_curves.png").is_file()
        assert (summary["status"], summary["exit_code"], summary["steps"]) == ("completed", 0, 5)
        assert {k: summary[k] for k in ("problem", "optimizer", "seed", "lr", "metrics_step")} == \
               {k: alone[k] for k in ("problem", "optimizer", "seed", "lr", "metrics_step")}
        assert summary[alone["primary_metric"]] == pytest.approx(alone[alone["primary_metric"]], rel=2e-5)


def test_a_diverging_member_stops_alone_a_refused_one_leaves_its_directory_and_the_others_go_on(
        tiny_config, tmp_path, capsys):
    shown = ["problem=sine", "optimizer=sgd", *FAST, "trainer.enable_progress_bar=true"]
    good, bad, refused = [*shown, "seed=0", "optimizer.lr=1e-3"], [*shown, "seed=1", "optimizer.lr=1e6"], [*shown, "seed=-1"]
    alone = tmp_path / "alone"
    train_ensemble([(tiny_config(*good, f"run_dir={alone}"), None)])
    capsys.readouterr()
    before = {path: path.read_bytes() for path in alone.rglob("*") if path.is_file()}  # where the refused job starts
    summaries = train_ensemble([(tiny_config(*good, f"run_dir={tmp_path / 'good'}"), None),
                                (tiny_config(*refused, f"run_dir={alone}"), None),
                                (tiny_config(*bad, f"run_dir={tmp_path / 'bad'}"), None)])
    assert (summaries[0]["status"], summaries[2]["status"], summaries[2]["exit_code"]) == ("completed", "diverged", 3)
    assert summaries[2]["diverged_step"] <= summaries[2]["steps"] < 5
    last = torch.load(summaries[2]["last_checkpoint"], weights_only=False)
    assert all(torch.isfinite(value).all() for value in last["state_dict"].values())
    assert metrics(tmp_path / "good").equals(metrics(alone))  # bit for bit
    assert summaries[1]["exit_code"] == 2 and summaries[1]["status"] == "failed: seed=-1 is invalid: must be a non-negative integer"
    assert {path: path.read_bytes() for path in alone.rglob("*") if path.is_file()} == before
    progress = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    assert progress[-1].startswith("step 5/5  1 member  val x_l1 best ")  # the diverged member has left
    best, worst = (float(value) for value in progress[-1].split("best ")[1].split("  ")[0].split(" worst "))
    validated = metrics(tmp_path / "good").dropna(subset=["val/x_l1"]).set_index("step")["val/x_l1"]
    assert best == worst == pytest.approx(validated[3], rel=1e-3)  # the last validation in the loop (at step 3)
    assert progress[0].startswith("step 1/5  2 members  val x_l1 best ")


def test_a_diverging_member_stops_where_its_single_run_stops_and_says_what_it_says(tmp_path, caplog):
    """Checked where the single run checks: at the end of its training steps of several updates
    (updates_per_step), not at every check_every-th update; the same steps, rows and one error line."""
    overrides = [*TINY, "problem=sine", "optimizer=adam", "optimizer.lr=1e6", "trainer.max_steps=40",
                 "trainer.val_check_interval=20", "trainer.log_every_n_steps=10", "updates_per_step=20",
                 "divergence_check_every=10", "figure_examples=0"]
    with caplog.at_level(logging.ERROR):
        alone = train(compose_config(overrides, tmp_path / "single"))
        single_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        caplog.clear()
        (member,) = train_ensemble([(compose_config(overrides, tmp_path / "member"), None)])
        member_lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert (alone["status"], alone["diverged_step"], alone["steps"]) == ("diverged", 2, 20)  # one training step of 20
    assert {k: member[k] for k in ("status", "exit_code", "diverged_step", "steps", "metrics_step")} == \
           {k: alone[k] for k in ("status", "exit_code", "diverged_step", "steps", "metrics_step")}
    pd.testing.assert_frame_equal(metrics(tmp_path / "member"), metrics(tmp_path / "single"))  # rows at 10 and 20
    assert [line.replace(str(tmp_path / "member"), str(tmp_path / "single")) for line in member_lines] == single_lines


def test_a_member_continues_alone_under_the_normal_trainer(case_runs, tmp_path):
    directory, _ = case_runs("sine-adam")  # seed 0: member0 and single0
    for run in ("member0", "single0"):
        shutil.copytree(directory / run, tmp_path / run)
    ours = torch.load(tmp_path / "member0/checkpoints/last.ckpt", weights_only=False)
    theirs = torch.load(tmp_path / "single0/checkpoints/last.ckpt", weights_only=False)
    assert ours.keys() == theirs.keys()
    assert ours["loops"] == theirs["loops"]
    assert (ours["epoch"], ours["global_step"], ours["hyper_parameters"]) == (theirs["epoch"], 5, theirs["hyper_parameters"])
    assert ours["callbacks"].keys() == theirs["callbacks"].keys()
    assert ours["run_identity"]["seed"] == 0 and ours["run_identity"] == theirs["run_identity"]
    for run in ("member0", "single0"):  # both extended by the normal trainer
        extended = [*TINY, *CASES["sine-adam"][:2], *FAST, "seed=0", "trainer.max_steps=8"]
        summary = train(compose_config(extended, tmp_path / run))
        assert (summary["status"], summary["steps"], summary["sessions"]) == ("completed", 8, 2)
    pd.testing.assert_frame_equal(metrics(tmp_path / "member0"), metrics(tmp_path / "single0"), check_exact=False,
                                  rtol=2e-5)


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


def test_the_ensemble_launcher_groups_what_it_can_and_runs_the_rest_alone(basic_sweep):
    sweep_dir, printed = basic_sweep
    assert "ensemble: 2 jobs train together: #0, #2" in printed
    assert "ensemble: 2 job(s) run one by one: a wall-clock budget" in printed
    for number, (seed, max_time) in enumerate([(0, None), (0, 60), (1, None), (1, 60)]):
        overrides = OmegaConf.load(sweep_dir / str(number) / ".hydra" / "overrides.yaml")
        assert f"seed={seed}" in overrides and f"trainer.max_time={max_time or 'null'}" in overrides
        assert read_summary(sweep_dir / str(number))["status"] == "completed"
    for member, alone in ((0, 1), (2, 3)):  # the same job, with and without a wall-clock budget
        pd.testing.assert_frame_equal(metrics(sweep_dir / str(member)), metrics(sweep_dir / str(alone)),
                                      check_exact=False, rtol=2e-5)


def test_a_bad_override_of_one_job_stops_the_sweep_before_any_job_runs(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        multirun(*SWEEP, "network=mlp,mpl", f"hydra.sweep.dir={tmp_path}")
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "network=mpl is not an option of network (did you mean mlp?)" in err
    assert [path.name for path in tmp_path.iterdir()] == ["multirun.yaml"]  # no job started


def test_a_named_sweep_trains_its_pending_jobs_together_and_a_rerun_skips_the_finished_ones(tmp_path):
    out = tmp_path / "out"
    command = [*write_sweep(tmp_path / "conf", "seeds_lrs", grid={"seed": [0, 1], "optimizer.lr": [1e-3, 3e-3]}),
               "problem=sine", "optimizer=adam", *TINY, *FAST, "validate_at_start=false", "hydra/launcher=ensemble",
               f"hydra.sweep.dir={out}"]
    assert "ensemble: 4 jobs train together" in multirun(*command)
    table = report(out)["table"]
    assert len(table) == 4 and (table["status"] == "completed").all()
    for _, row in table.iterrows():
        assert row["x_l1"] == read_summary(out / row["run_dir"])["x_l1"]
    finished = {path.parent.name: path.stat().st_mtime_ns for path in out.glob("*/summary.json")}
    deleted = table["run_dir"][1]
    (out / deleted / "summary.json").unlink()
    printed = multirun(*command)
    assert "3 finished before, 1 to run" in printed and "ensemble: 1 job alone" in printed
    again = {path.parent.name: path.stat().st_mtime_ns for path in out.glob("*/summary.json")}
    assert {name: again[name] for name in finished if name != deleted} == \
           {name: time for name, time in finished.items() if name != deleted}
    assert again[deleted] > finished[deleted]
    assert "4 finished before, 0 to run" in multirun(*command)
    assert multirun(*command, "hydra.sweeper.dry_run=true").count("completed  ") == 4  # what sip-sweep --list runs


def test_groups_go_to_the_inner_launcher_joblib_in_two_processes(basic_sweep, tmp_path):
    printed = multirun(*SWEEP, *TWO_GROUPS, *JOBLIB, f"hydra.sweep.dir={tmp_path}")
    assert "ensemble: 2 jobs train together: #0, #2" in printed and "ensemble: 2 jobs train together: #1, #3" in printed
    assert "Joblib.Parallel(n_jobs=2" in printed and "is launching 2 jobs" in printed
    for number, alone in enumerate((0, 0, 2, 2)):  # the same members, trained by the basic inner launcher
        summary = read_summary(tmp_path / str(number))
        assert (summary["status"], summary["exit_code"], summary["steps"]) == ("completed", 0, 5)
        assert OmegaConf.load(tmp_path / str(number) / ".hydra" / "overrides.yaml")[2] == f"seed={number // 2}"
        assert metrics(tmp_path / str(number)).equals(metrics(basic_sweep[0] / str(alone)))
        assert summary["x_l1"] == read_summary(basic_sweep[0] / str(alone))["x_l1"]


def signal_when_waiting(gate, processes: int, stop: threading.Event) -> list[int]:
    """Once `processes` processes wait at `gate` (tests/gated_data.py), SIGTERM each of them, then open the
    gate; returns the process ids signalled."""
    signalled: list[int] = []
    while not stop.is_set():
        waiting = sorted(gate.parent.glob(f"{gate.name}.waiting.*"))
        if len(waiting) == processes:
            signalled += [int(path.suffix[1:]) for path in waiting]
            for pid in signalled:
                os.kill(pid, signal.SIGTERM)
            gate.touch()
            return signalled
        time.sleep(0.05)
    return signalled


def test_a_signal_stops_every_member_after_its_step_and_the_same_command_continues_them(basic_sweep, tmp_path):
    gate = tmp_path / "gate"  # each group's process waits in step 4 until the signal is sent (tests/gated_data.py)
    command = [*SWEEP, *TWO_GROUPS, *JOBLIB, f"hydra.sweep.dir={tmp_path / 'sweep'}",
               "data._target_=gated_data.GatedData", f"+data.gate={gate}", "+data.gate_step=3"]
    stop = threading.Event()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        signalled = pool.submit(signal_when_waiting, gate, 2, stop)
        try:
            multirun(*command)  # its groups train in two joblib processes, which get the signals
        finally:
            stop.set()
        assert len(signalled.result()) == 2 and os.getpid() not in signalled.result()
    for number in range(4):
        summary = read_summary(tmp_path / "sweep" / str(number))
        assert (summary["status"], summary["exit_code"], summary["steps"]) == ("interrupted", 4, 4)
        assert torch.load(summary["last_checkpoint"], weights_only=False)["global_step"] == 4
    for last_member in (2, 3):  # the log of a group's process goes on in its last member's log file
        continuing = [line for line in (tmp_path / "sweep" / str(last_member) / "train.log").read_text().splitlines()
                      if "interrupted at step 4; continue with " in line]
        python, script, flag, *arguments = shlex.split(continuing[0].split("continue with ")[1])
        assert (python, script, flag, sorted(arguments)) == ("python", "train.py", "-m", sorted(command))
    multirun(*command)  # the same command again
    for number, uninterrupted in enumerate((0, 0, 2, 2)):
        summary = read_summary(tmp_path / "sweep" / str(number))
        assert (summary["status"], summary["exit_code"], summary["steps"], summary["sessions"]) == ("completed", 0, 5, 2)
        assert metrics(tmp_path / "sweep" / str(number)).equals(metrics(basic_sweep[0] / str(uninterrupted)))
