"""A run's records are its own: the same command finds its directory, resume=false never mixes two runs, a
refused start changes no byte, and an error in the code a run calls is not passed off as a configuration error."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from conftest import CONF, REPO, TINY, compose_config
from fault_log import record
from run_files import snapshot
from sip_train import callbacks, exit_codes
from sip_train.problems.heat import Heat
from sip_train.run import ConfigError, train
from sip_train.summary import read_summary

#: A SIP heat run of 4 steps on a 16x16 grid (~1 s).
RUN = [*TINY, "problem=heat", "problem.resolution=16", "network.levels=2", "figure_examples=0"]


def default_run_dir(*overrides: str) -> str:
    """The run directory Hydra would create for `python train.py <overrides>` (its ${run_name:})."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg.hydra.run.dir


def test_the_default_run_directory_is_named_after_what_decides_the_result():
    base = default_run_dir("problem=heat", "optimizer=sip")
    assert base.startswith("outputs/heat-sip/") and len(base.rsplit("/", 1)[1]) == 8
    assert default_run_dir("optimizer=sip", "problem=heat") == base  # the same command, however written
    assert default_run_dir("problem=heat", "optimizer=sip", "trainer.max_steps=5000", "threads=2") == base  # observers
    changed = {default_run_dir("problem=heat", "optimizer=sip", change) for change in ("seed=1", "optimizer.lr=1e-4")}
    assert len(changed) == 2 and base not in changed
    tagged = default_run_dir("problem=heat", "optimizer=sip", "name=second")
    assert tagged == base.replace("heat-sip/", "heat-sip/second-")  # several runs of one configuration


def test_resume_false_moves_the_earlier_run_aside_and_records_only_the_new_one(tmp_path):
    first = train(compose_config([*RUN, "logger=wandb", "optimizer.lr=1e-3"], tmp_path))
    first_id = (tmp_path / "wandb_run_id").read_text()
    earlier = snapshot(tmp_path)
    second = train(compose_config([*RUN, "logger=wandb", "optimizer.lr=3e-3", "resume=false"], tmp_path))
    (aside,) = tmp_path.glob("replaced-*")
    assert snapshot(aside) == earlier  # the earlier run, byte for byte (W&B's files by name)
    assert (tmp_path / "wandb_run_id").read_text() != first_id  # a new W&B run
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].is_monotonic_increasing  # a fresh metrics.csv
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["run_identity"]["optimizer"]["lr"] == 3e-3 and saved["global_step"] == 4
    assert second["last_checkpoint"] == str(tmp_path / "checkpoints" / "last.ckpt")
    assert second["sessions"] == 1 and second["x_l1"] != first["x_l1"]
    assert [path.name for path in (tmp_path / "checkpoints").iterdir()] == sorted(
        path.name for path in (aside / "checkpoints").iterdir())  # its own best and last, no leftovers
    record("resume=false in a run's directory", "after it completed",
           "fresh run: new W&B run id, new metrics.csv and checkpoints; the earlier run moved to replaced-<date>/",
           "nothing")


@pytest.mark.parametrize("override,kind", [
    ("optimizer.lr=3e-3", "another run's checkpoint"),
    ("optimizer.lr=-1", "a bad value"),
    ("problem.resolution=4096 data.batch_size=128 data.val_size=128", "too little memory"),
])
def test_a_refused_start_changes_no_byte_of_the_run_directory(tmp_path, override, kind):
    train(compose_config(RUN, tmp_path))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError) as error:
        train(compose_config([*RUN, *override.split(), "trainer.max_steps=6"], tmp_path))
    assert "\n" not in str(error.value)
    assert snapshot(tmp_path) == before
    record("refused start in a run's directory", f"{kind} ({override.split()[0]})",
           "refused in one line, exit 2; every file of the directory unchanged (hashed)", "nothing")


def test_too_little_memory_is_refused_in_one_line_before_anything_is_created(tmp_path):
    """On the command line, with the default run directory: one line, exit 2, and no directory, log, checkpoint
    or W&B run left behind."""
    refused = subprocess.run([sys.executable, str(REPO / "train.py"), "logger=wandb", "trainer.accelerator=cpu",
                              "problem.resolution=4096"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == exit_codes.CONFIG_ERROR
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert re.match(r"error: the run needs about [\d.]+ GB of cpu memory, [\d.]+ GB are free: .*"
                    r"data.batch_size=128\); lower data.batch_size", refused.stderr)
    assert list(tmp_path.iterdir()) == []
    record("data and network too big for memory", "problem.resolution=4096 at start-up",
           "refused in one line (estimate and free memory), exit 2; no run directory, checkpoint or W&B run",
           "nothing")


def test_an_error_in_the_code_a_run_calls_keeps_its_type_and_traceback(tmp_path, monkeypatch):
    """A bug in a problem's simulate, reached by the start-up check of the Gauss-Newton inverse, is the code's
    error (exit 1, traceback), not a configuration error; a constructor refusing a value still is one."""
    def buggy_simulate(self, x):
        return torch.zeros(x.shape, dtype="float32")  # a bug: raised by torch, inside the problem

    monkeypatch.setattr(Heat, "simulate", buggy_simulate)
    with pytest.raises(TypeError, match="zeros") as error:
        train(compose_config([*RUN, "inverse=gauss_newton"], tmp_path))
    assert not isinstance(error.value, ConfigError)
    assert any(frame.name == "buggy_simulate" for frame in error.traceback)
    summary = read_summary(tmp_path)
    assert summary["exit_code"] == exit_codes.FAILED and summary["status"].startswith("failed: TypeError: ")
    with pytest.raises(ConfigError, match="network.levels"):  # refused by the network's constructor
        train(compose_config([*RUN, "network.levels=9"], tmp_path / "levels"))
    record("bug in a user's simulate", "called by the start-up check of inverse=gauss_newton",
           "its own TypeError and traceback, exit 1; not called a configuration error", "nothing")


def test_threads_are_restored_for_the_next_job_of_the_process(tmp_path):
    torch.set_num_threads(2)
    try:
        train(compose_config([*RUN, "threads=1", "trainer.max_steps=1"], tmp_path))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


def test_a_refused_start_on_the_command_line_leaves_hydras_files_and_the_log_as_they_were(tmp_path):
    train(compose_config(RUN, tmp_path))
    (tmp_path / "train.log").write_text("[2026-01-01 00:00:00,000][sip_train.run][INFO] - the earlier session\n")
    before = snapshot(tmp_path)
    refused = subprocess.run([sys.executable, str(REPO / "train.py"), *RUN, "optimizer.lr=3e-3",
                              f"hydra.run.dir={tmp_path}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert refused.returncode == exit_codes.CONFIG_ERROR
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and refused.stderr.startswith("error: checkpoint")
    assert snapshot(tmp_path) == before  # .hydra/, train.log and summary.json included
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


def test_a_step_time_after_a_validation_is_that_steps_own(monkeypatch):
    """Steps of 10 ms, a validation of 1 s after step 2: every interval is 10 ms (the validation is left out),
    so the time/step_ms logged after a validation is a fresh one, not the interval before it."""
    clock = iter([0.0, 0.010, 0.020, 0.020, 1.020, 1.030, 1.040])  # starts of steps 0-2, validation, steps 3-4
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: next(clock))
    timer, trainer = callbacks.StepTimer(), SimpleNamespace(global_step=0)
    for step in range(3):
        trainer.global_step = step
        timer.on_train_batch_start(trainer, None, None, 0)
    timer.on_validation_start(trainer, None)
    timer.on_validation_end(trainer, None)
    for step in (3, 4):
        trainer.global_step = step
        timer.on_train_batch_start(trainer, None, None, 0)
    assert timer.step_times_ms == pytest.approx([10.0] * 4)
