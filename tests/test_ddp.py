"""Two CPU processes with DDP (gloo) train one network: same weights everywhere, distinct samples, the
validation of a single process, a resume that continues, and ranks that disagree do not hang."""
from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO, TINY, compose_config
from fault_log import record

from sip_train import exit_codes
from sip_train.data import SyntheticData
from sip_train.module import InverseProblemModule
from sip_train.run import ConfigError, train
from sip_train.summary import read_summary

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
RUN = [*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "problem=heat", "problem.resolution=16",
       "network.levels=2", "data.val_size=8", "figure_examples=0", "threads=1", "divergence_check_every=1"]


def ddp_run(run_dir, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tests/ddp_probe.py", str(run_dir), *RUN, *overrides], cwd=REPO,
                          env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=240, check=False)


def test_two_ranks_train_one_network_and_a_resumed_ddp_run_continues(tmp_path):
    result = ddp_run(tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = read_summary(tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 4 and summary["device_count"] == 2
    assert list(tmp_path.glob("summary*.json")) == [tmp_path / "summary.json"]
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(rank0["weights"][key], rank1["weights"][key]) for key in rank0["weights"])
    assert not torch.equal(rank0["first_batch"], rank1["first_batch"])  # each rank draws its own samples

    # the logged validation equals a single-process validation of the saved weights on the same fixed set
    module = InverseProblemModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").eval()
    assert all(torch.equal(module.network.state_dict()[k], rank0["weights"][k]) for k in rank0["weights"])
    x_true, y_target = SyntheticData(module.problem, batch_size=4, val_size=8, seed=0).validation_set(torch.device("cpu"))
    with torch.no_grad():
        x = module.predict(y_target)
        x_l1 = module.problem.metrics(x, x_true, module.problem.simulate(x), y_target)["x_l1"].mean()
    logged = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/x_l1"]).iloc[-1]
    assert logged["step"] == 4 and logged["val/x_l1"] == pytest.approx(float(x_l1), rel=1e-5)

    # resume to 8 steps; rank 1 alone goes non-finite at step 6: both ranks stop together (no hang)
    result = ddp_run(tmp_path, "trainer.max_steps=8", env={"NAN_AT_STEP": "6"})
    summary = read_summary(tmp_path)
    assert result.returncode == exit_codes.DIVERGED, result.stderr[-3000:]
    assert summary["status"] == "diverged" and summary["diverged_step"] == 6 and summary["sessions"] == 2
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4  # last saved
    record("DDP rank mismatch: rank 1 alone non-finite", "step 6 of a 2-process run resumed at step 4",
           f"both ranks stop at once, diverged (exit {result.returncode}), no hang; last.ckpt stays the finite one of "
           "step 4", "the steps since the last checkpoint")


def test_ddp_inside_a_multirun_is_refused_in_one_line(tmp_path):
    cfg = compose_config([*TINY, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "hydra.mode=MULTIRUN"],
                         tmp_path)
    with pytest.raises(ConfigError, match=r"^trainer.devices=2 \(2 processes\) is invalid in a multirun or sweep"):
        train(cfg)
    summary = read_summary(tmp_path)
    assert summary["exit_code"] == exit_codes.CONFIG_ERROR and summary["steps"] == 0
    record("failing sweep job (DDP inside a multirun)", "at start-up of the job",
           f"its summary.json: status failed, exit_code {summary['exit_code']}; no rank was launched", "that job only")
