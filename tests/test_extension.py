"""Extending sip-train from a user's own folder: one .py and one .yaml per problem and per rule.

This is the README's "Extending" section as a test. A user folder outside the package holds a new
problem (4 unknowns seen through 6 noisy-free linear measurements, with an exact least-squares
inverse: vectors, not grids) and a new update rule; their YAML files sit in the user's config folder,
which `--config-dir` adds to Hydra's search path. Both train through train.py with figures,
validation, checkpoints and summary.json.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

PROBLEM = '''
"""Recover 4 unknowns from 6 linear measurements y = A x (A fixed, well posed, badly scaled)."""
import torch

from sip_train.problems.base import InverseProblem


class LinearMeasurements(InverseProblem):
    """y = A x with A = Q diag(scales), x* ~ N(0, 1)^4; the SIP update is the least-squares inverse."""

    x_shape = (4,)
    y_shape = (6,)

    def __init__(self, condition: float = 100.0, batch_reduction: str = "mean") -> None:
        super().__init__(batch_reduction)
        q, _ = torch.linalg.qr(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
        self.register_buffer("matrix", q * torch.logspace(0, -torch.log10(torch.tensor(condition)), 4))

    def sample(self, n, generator):
        x = torch.randn(n, 4, generator=generator, device=generator.device)
        return x, self.simulate(x)

    def simulate(self, x):
        return x @ self.matrix.T

    def inverse_update(self, x, y, y_target):
        return torch.linalg.lstsq(self.matrix, (y_target - y).T).solution.T
'''

PROBLEM_YAML = '''
# @package _global_
# python train.py --config-dir <your folder>/conf problem=linear_measurements optimizer=sip
defaults:
  - override /network: mlp
  - _self_

problem:
  _target_: linear_measurements.LinearMeasurements
  condition: 10.0
data:
  batch_size: 32
'''

RULE = '''
"""Adam on log(1 + L): the physics loss with its large values compressed."""
import torch

from sip_train.rules.gradient import PhysicsGradient


class LogPhysicsLoss(PhysicsGradient):
    """Minimise log(1 + y_loss(P(x), y*)) per example, back-propagated through the physics."""

    def objective(self, problem, x, y_target):
        per_example, y = super().objective(problem, x, y_target)
        return torch.log1p(per_example), y
'''

RULE_YAML = '''
_target_: log_physics_loss.LogPhysicsLoss
lr: 3.0e-3
optimizer:
  _target_: torch.optim.Adam
  _partial_: true
'''

RUN = ["logger=csv", "trainer.accelerator=cpu", "trainer.max_steps=200", "trainer.val_check_interval=100", "optimizer.lr=1e-2",
       "trainer.log_every_n_steps=10", "data.val_size=64", "data.val_batch_size=64", "figure_examples=2", "threads=1"]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory) -> Path:
    """A user's project: my_sip/{linear_measurements.py, log_physics_loss.py, conf/{problem,optimizer}/*.yaml}."""
    folder = tmp_path_factory.mktemp("my_sip")
    files = {"linear_measurements.py": PROBLEM, "log_physics_loss.py": RULE,
             "conf/problem/linear_measurements.yaml": PROBLEM_YAML, "conf/optimizer/log_physics_loss.yaml": RULE_YAML}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip())
    return folder


def train_in_user_folder(folder: Path, run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`PYTHONPATH=<folder> python train.py --config-dir <folder>/conf ...`, as the README says."""
    env = {**os.environ, "PYTHONPATH": str(folder), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    command = [sys.executable, str(REPO / "train.py"), "--config-dir", str(folder / "conf"), *RUN, *overrides,
               f"hydra.run.dir={run_dir}"]
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("optimizer", ["log_physics_loss", "sip"])
def test_a_problem_and_a_rule_from_a_user_folder_train_through_train_py(optimizer, user_folder, tmp_path):
    run_dir = tmp_path / "run"
    done = train_in_user_folder(user_folder, run_dir, "problem=linear_measurements", f"optimizer={optimizer}")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 200
    assert (summary["problem"], summary["optimizer"], summary["network"]) == ("linear_measurements", optimizer, "mlp")
    curve = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/x_l1"])
    assert curve["step"].tolist() == [0, 100, 200]
    assert curve["val/x_l1"].iloc[-1] < 0.6 * curve["val/x_l1"].iloc[0]  # it really learns
    assert Path(summary["last_checkpoint"]).is_file() and Path(summary["best_checkpoint"]).is_file()
    assert sorted(p.name for p in (run_dir / "figures").glob("*.png")) == [
        "learning_curves.png", "val_step0000000.png", "val_step0000100.png", "val_step0000200.png"]


def test_an_unknown_user_problem_lists_the_user_problems_with_the_packaged_ones(user_folder, tmp_path):
    done = train_in_user_folder(user_folder, tmp_path / "run", "problem=linear_measurement")
    assert done.returncode != 0
    assert "linear_measurements" in done.stderr and "poisson" in done.stderr
