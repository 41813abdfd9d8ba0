"""A job of the shipped submitit launcher, preempted with submitit's signal, is requeued by submitit and
ends as an uninterrupted run does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, compose_config
from fault_log import record

from sip_train.run import train
from sip_train.summary import read_summary

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
# ~40 ms steps: long enough to be preempted mid-way, short enough for the suite.
RUN = ["logger=csv", "trainer.enable_progress_bar=false", "problem=heat", "optimizer=sip", "network.levels=3",
       "data.batch_size=8", "data.val_size=8", "trainer.max_steps=60", "trainer.val_check_interval=20",
       "trainer.log_every_n_steps=5", "figure_examples=0", "threads=1"]


def validation_curve(run_dir: Path) -> dict[int, float]:
    if not (run_dir / "metrics.csv").is_file():
        return {}
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/x_l1"])
    return dict(zip(metrics["step"].astype(int), metrics["val/x_l1"]))


def submitit_tasks(folder: Path) -> list[int]:
    """Process ids of the running submitit tasks (what SLURM would signal) of the jobs under `folder`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "submitit.core._submit" in command and any(str(folder) in part for part in command):
            pids.append(int(proc.name))
    return pids


def test_a_submitit_job_preempted_by_its_signal_is_requeued_and_ends_like_an_uninterrupted_run(tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "train.py", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
         f"hydra.sweep.dir={sweep_dir}", *RUN, "problem.resolution=16"],
        cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = sweep_dir / "0"
    deadline = time.time() + 180
    while len(validation_curve(job)) < 2 or len(tasks := submitit_tasks(sweep_dir)) != 1:
        assert process.poll() is None and time.time() < deadline, "the job ended before it could be preempted"
        time.sleep(0.05)
    os.kill(tasks[0], signal.SIGUSR2)  # submitit's preemption/timeout signal (SLURM sends it to the task)
    output, _ = process.communicate(timeout=240)
    assert process.returncode == 0, output[-3000:]

    reference_dir = tmp_path / "reference"
    reference = train(compose_config([*RUN, "problem.resolution=16"], reference_dir))
    summary = read_summary(job)
    assert summary["status"] == "completed" and summary["steps"] == 60 and summary["sessions"] == 2
    assert validation_curve(job) == pytest.approx(validation_curve(reference_dir), rel=1e-4)
    assert summary["x_l1"] == pytest.approx(reference["x_l1"], rel=1e-4)
    requeued = "".join(path.read_text() for path in (sweep_dir / ".submitit").rglob("*_log.*"))
    assert "Requeued job" in requeued
    log = (job / "train.log").read_text()
    interrupted_at = int(log.split("interrupted at step ")[1].split(";")[0])
    assert 20 <= interrupted_at < 60
    record("SIGUSR2 from submitit (preemption / time limit), submitit_local launcher", "mid-training",
           f"checkpoint at step {interrupted_at}, submitit requeued the job, which continued and completed with "
           "the same validation curve", "the step in progress at most")

