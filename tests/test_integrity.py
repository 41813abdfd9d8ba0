"""A run is exactly the run its configuration describes: across resumes, signals and re-runs."""
from __future__ import annotations

import logging
import os
import re
import signal

import pandas as pd
import pytest
import torch
from conftest import TINY, compose_config
from fault_log import record
from run_files import snapshot

from sip_train import exit_codes
from sip_train.checkpoints import IDENTITY_KEY
from sip_train.data import VALIDATION_STREAM, SyntheticData, stream_generator
from sip_train.module import InverseProblemModule
from sip_train.problems.heat import Heat
from sip_train.run import ConfigError, train
from sip_train.summary import read_summary

#: A SIP heat run of 6 steps on a 16x16 grid, validated every 2 steps (~1 s).
RUN = [*TINY, "problem=heat", "problem.resolution=16", "network.levels=2", "trainer.max_steps=6", "threads=1",
       "figure_examples=0"]


def run(run_dir, *overrides: str) -> dict:
    return train(compose_config([*RUN, *overrides], run_dir))


def validation_curve(run_dir) -> dict[int, float]:
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/x_l1"])
    return dict(zip(metrics["step"].astype(int), metrics["val/x_l1"]))


def checkpoint_step(run_dir) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]


@pytest.fixture(scope="module")
def completed(tmp_path_factory):
    """One uninterrupted run: the reference every other run of RUN must match."""
    run_dir = tmp_path_factory.mktemp("completed")
    return run_dir, run(run_dir)


@pytest.mark.parametrize("override,key", [
    ("optimizer=adam", "optimizer._target_"),
    ("optimizer.lr=1e-4", "optimizer.lr"),
    ("optimizer.eta=0.5", "optimizer.eta"),
    ("inverse=gauss_newton", "optimizer.inverse._target_"),
    ("optimizer.optimizer._target_=torch.optim.SGD", "optimizer.optimizer._target_"),
    ("data.batch_size=2", "data.batch_size"),
    ("data.steps_per_draw=3", "data.steps_per_draw"),
    ("data=finite", "data.train_size"),
    ("seed=1", "seed"),
    ("trainer.precision=64-true", "trainer.precision"),
])
def test_continuing_with_a_result_affecting_change_is_refused_naming_both_values(completed, tmp_path, override, key):
    reference_dir, _ = completed
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes((reference_dir / "checkpoints" / "last.ckpt").read_bytes())
    before = snapshot(run_dir)
    with pytest.raises(ConfigError) as error:
        run(run_dir, override, "trainer.max_steps=8")
    message = str(error.value)
    assert "\n" not in message and f"{key}: " in message and " there, " in message and " now" in message
    assert "hydra.run.dir=" in message and "resume=false" in message
    assert snapshot(run_dir) == before  # nothing written: the checkpoint is the run's record
    differences = message[message.index("run (") + 5 : message.index("): choose")]
    record("changed setting on resume", override, f"refused before training, naming {differences}", "nothing")


@pytest.mark.parametrize("steps_per_draw,continues", [(1, True), (3, False)])
def test_a_checkpoint_from_before_a_new_setting_continues_under_its_old_behaviour(completed, tmp_path, steps_per_draw,
                                                                                  continues):
    """data.steps_per_draw came later: a checkpoint without it continues with 1 (what it did), not with 3."""
    reference_dir, _ = completed
    checkpoint = torch.load(reference_dir / "checkpoints" / "last.ckpt", weights_only=False)
    del checkpoint["run_identity"]["data"]["steps_per_draw"]
    (tmp_path / "checkpoints").mkdir()
    torch.save(checkpoint, tmp_path / "checkpoints" / "last.ckpt")
    if continues:
        assert run(tmp_path, f"data.steps_per_draw={steps_per_draw}", "trainer.max_steps=8")["steps"] == 8
    else:
        with pytest.raises(ConfigError, match="data.steps_per_draw: 1 there, 3 now"):
            run(tmp_path, f"data.steps_per_draw={steps_per_draw}", "trainer.max_steps=8")


def test_the_checkpoint_holds_the_whole_identity(completed):
    run_dir, _ = completed
    identity = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)[IDENTITY_KEY]
    assert {"problem", "optimizer", "network", "data", "seed"} <= set(identity)
    assert identity["optimizer"]["inverse"]["_target_"].endswith("Auto")  # SIP's inverse solver, where SIP uses it
    assert identity["trainer"] == {"precision": "32-true", "accelerator": "cpu", "processes": 1}
    assert identity["optimizer"]["eta"] == 1.0 and identity["optimizer"]["optimizer"]["_target_"] == "torch.optim.Adam"
    assert "logger" not in identity and "run_dir" not in identity


def test_rerunning_a_completed_run_changes_nothing_on_disk(completed, caplog):
    run_dir, summary = completed
    caplog.set_level(logging.INFO, logger="sip_train.run")
    files = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    again = run(run_dir, "trainer.val_check_interval=3", "figure_examples=1")  # observing keys may change
    assert again == read_summary(run_dir) == summary
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == files
    assert "nothing to do" in caplog.text
    record("the same command again", "after the run completed (its default run directory is named after its "
           "identity, so the command finds it)", "nothing to do; no file changed", "nothing")


def test_raising_max_steps_continues_a_completed_run_and_accumulates_its_statistics(completed, tmp_path):
    reference_dir, first = completed
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for path in reference_dir.rglob("*"):
        if path.is_file():
            target = run_dir / path.relative_to(reference_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    summary = run(run_dir, "trainer.max_steps=8")
    assert summary["status"] == "completed" and summary["exit_code"] == exit_codes.COMPLETED
    assert summary["steps"] == 8 and summary["metrics_step"] == 8 and summary["sessions"] == 2
    assert summary["wall_time_s"] > first["wall_time_s"]
    assert summary["step_time_samples"] > first["step_time_samples"]
    assert list(validation_curve(run_dir)) == [0, 2, 4, 6, 8]  # no repeated row
    assert summary["primary_metric"] == "x_l1" and summary["x_l1"] == pytest.approx(validation_curve(run_dir)[8])
    assert (summary["accelerator"], summary["device_count"], summary["precision"]) == ("cpu", 1, "32-true")
    assert summary["device_name"]


def _signal_at(monkeypatch, signum: int, step: int, moment: str) -> None:
    """Send `signum` to this process while step `step` + 1 trains ("step") or while step `step` is validated."""
    hook = "training_step" if moment == "step" else "validation_step"
    original = getattr(InverseProblemModule, hook)

    def hooked(self, batch, batch_idx):
        if self.global_step == step and (moment == "step" or batch_idx == 0) and self.trainer.state.fn == "fit":
            os.kill(os.getpid(), signum)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(InverseProblemModule, hook, hooked)


@pytest.mark.parametrize("moment", ["step", "validation"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2], ids=lambda s: s.name)
def test_a_signal_loses_at_most_the_step_in_progress(completed, tmp_path, monkeypatch, signum, moment):
    reference_dir, _ = completed
    handed_on = []
    previous = signal.signal(signum, lambda *args: handed_on.append(args[0])) if signum != signal.SIGTERM else None
    try:
        with monkeypatch.context() as patch:
            _signal_at(patch, signum, 2, moment)
            interrupted = run(tmp_path)
    finally:
        if previous is not None:
            signal.signal(signum, previous)
    assert interrupted["status"] == "interrupted" and interrupted["exit_code"] == exit_codes.INTERRUPTED
    saved = checkpoint_step(tmp_path)
    # the step in progress is finished and saved (during validation: the run stops at the next step boundary)
    assert saved == interrupted["steps"] >= 2
    assert handed_on == ([] if signum == signal.SIGTERM else [signum])  # submitit's handler runs after the save
    resumed = run(tmp_path)
    assert resumed["status"] == "completed" and resumed["steps"] == 6 and resumed["sessions"] == 2
    assert validation_curve(tmp_path) == pytest.approx(validation_curve(reference_dir), rel=1e-5)
    record(f"{signal.Signals(signum).name}", f"during {'training step 3' if moment == 'step' else 'validation of step 2'}",
           f"exit {interrupted['exit_code']}, checkpoint at step {saved}; rerun completed with the same validation curve",
           f"{interrupted['steps'] - saved} finished steps")


def test_an_early_interrupt_reports_the_step_0_validation_and_the_command_that_continues(tmp_path, monkeypatch,
                                                                                         caplog):
    caplog.set_level(logging.INFO)
    _signal_at(monkeypatch, signal.SIGTERM, 0, "step")
    interrupted = run(tmp_path)
    assert interrupted["status"] == "interrupted" and interrupted["metrics_step"] == 0
    assert interrupted["x_l1"] == pytest.approx(validation_curve(tmp_path)[0])
    assert f"continue with: python train.py {RUN[0]} " in caplog.text and f"hydra.run.dir={tmp_path}" in caplog.text
    closing = [line for line in caplog.text.splitlines() if "interrupted after" in line][-1]
    assert re.search(r"val x_l1 = \d+(\.\d{1,3})?(e[+-]\d+)? \(run dir", closing)  # rounded, not a raw float
    assert "Received SIGTERM" not in caplog.text  # Lightning's own handler is not called after the closing line


def test_a_run_stopped_by_max_time_is_checked_for_divergence_before_its_final_save(tmp_path):
    summary = run(tmp_path, "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_steps=-1", "trainer.max_time=2",
                  "trainer.val_check_interval=100000", "divergence_check_every=100000", "validate_at_start=false")
    assert summary["status"] == "diverged" and summary["exit_code"] == exit_codes.DIVERGED
    model = InverseProblemModule.load_from_checkpoint(summary["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    record("NaN, then the max_time limit", f"step {summary['diverged_step']}",
           "diverged (exit 3); the saved checkpoint is the last finite one", "the non-finite steps only")


def test_compose_config_returns_an_independent_resolved_config():
    first = compose_config(["experiment=paper_fig6_poisson", "optimizer=sgd"])
    compose_config(["experiment=paper_fig6_poisson", "optimizer=adam"])
    assert first.optimizer.lr == 3e-12
    assert first.run_dir.startswith("outputs/poisson-sgd/") and "${" not in str(dict(first.optimizer))


def test_the_fixed_sets_are_drawn_on_the_cpu_whatever_the_device():
    problem = Heat(resolution=8)
    data = SyntheticData(problem, batch_size=2, val_size=4, train_size=6, seed=3)
    expected = problem.sample(4, stream_generator(torch.device("cpu"), 3, VALIDATION_STREAM))
    assert all(torch.equal(a, b) for a, b in zip(data.validation_set(torch.device("cpu")), expected))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_fixed_sets_are_identical_on_cuda_and_on_the_cpu():
    problem = Heat(resolution=8)
    cpu = SyntheticData(problem, batch_size=2, val_size=4, train_size=6, seed=3)
    cuda = SyntheticData(Heat(resolution=8).cuda(), batch_size=2, val_size=4, train_size=6, seed=3)
    for name in ("validation", "train"):
        for a, b in zip(cpu._fixed_set(name, torch.device("cpu")), cuda._fixed_set(name, torch.device("cuda"))):
            assert b.device.type == "cuda" and torch.equal(a, b.cpu())
