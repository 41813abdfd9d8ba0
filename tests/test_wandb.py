"""What a run sends to W&B, read back from the offline run file it writes: every metric on the training
step, the full run config, best and final validation error in the summary, multirun jobs grouped and
named by their swept values; the offline notice; `disabled` logs nothing to W&B but the CSV."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from wandb_files import finished_run_records
from sip_train import loggers
from sip_train.console import offline_notice
from sip_train.run import train

class WandbRun:
    """The parts of an offline W&B run a researcher sees: run info, config, metric definitions, history, summary."""

    def __init__(self, run_dir: Path, timeout_s: float = 30.0) -> None:
        files = list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))
        assert len(files) == 1, files
        records = finished_run_records(files[0], timeout_s)
        self.config, self.summary, self.history, self.metrics = {}, {}, [], []
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
                self._update(self.config, record.run.config.update)
            elif kind == "config":
                self._update(self.config, record.config.update)
            elif kind == "metric":
                self.metrics.append(record.metric)
            elif kind == "history":
                row: dict = {}
                for item in record.history.item:  # an image's parts (width, height, ...) as a dict under its key
                    value = json.loads(item.value_json)
                    if len(item.nested_key) > 1:
                        row.setdefault(item.nested_key[0], {})["/".join(item.nested_key[1:])] = value
                    else:
                        row[item.nested_key[0] if item.nested_key else item.key] = value
                self.history.append(row)
            elif kind == "summary":
                self._update(self.summary, record.summary.update)

    @staticmethod
    def _update(into: dict, items) -> None:
        for item in items:
            into["/".join(item.nested_key) or item.key] = json.loads(item.value_json)


def config_value(config: dict, dotted: str):
    group, *rest = dotted.split(".")
    value = config[group]
    for key in rest:
        value = value[key]
    return value


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def test_every_metric_is_on_the_training_step_and_the_summary_holds_the_best_error(tiny_config, tmp_path, offline,
                                                                                 caplog):
    with caplog.at_level(logging.INFO, logger="sip_train.loggers"):
        summary = train(tiny_config("logger=wandb", "problem=exp", "optimizer=adam", "trainer.max_steps=4",
                                    "trainer.val_check_interval=2", "figure_examples=2"))
    run = WandbRun(tmp_path)
    step = loggers.STEP_METRIC
    assert any(m.name == step for m in run.metrics)
    assert any(m.glob_name == "*" and m.step_metric == step for m in run.metrics)
    logged = {key for row in run.history for key in row if not key.startswith("_")} - {step}
    assert {"train/objective", "train/y_l2", "val/x_l1", "val/examples"} <= logged
    assert all(step in row for row in run.history)  # every logged value carries the step it belongs to
    validation = [(row[step], row["val/x_l1"]) for row in run.history if "val/x_l1" in row]
    assert [s for s, _ in validation] == [0, 2, 4]
    assert sorted(row[step] for row in run.history if "val/examples" in row) == [0, 2, 4]  # figures at their step
    assert run.summary["val/x_l1"]["min"] == pytest.approx(min(v for _, v in validation))
    assert run.summary["val/x_l1"]["last"] == pytest.approx(validation[-1][1]) == pytest.approx(summary["x_l1"])
    assert run.summary["status"] == "completed" and run.summary["steps"] == 4 and run.summary["wall_time_s"] > 0
    assert config_value(run.config, "data.batch_size") == 4
    assert config_value(run.config, "trainer.max_steps") == 4
    assert config_value(run.config, "optimizer.lr") == pytest.approx(1e-3)
    assert run.config["choices"]["problem"] == "exp" and set(run.run.tags) >= {"exp", "adam"}
    assert run.run.run_group == ""  # a single run belongs to no group
    sync_dir = next(tmp_path.glob("wandb/offline-run-*")).resolve()
    notices = [r.getMessage() for r in caplog.records if r.name.startswith("sip_train") and "offline" in r.getMessage()]
    assert notices == [offline_notice(sync_dir)]


def test_the_offline_notice_is_one_line_with_the_sync_command():
    notice = offline_notice("/runs/a/wandb/offline-run-1")
    assert "\n" not in notice and "offline" in notice
    assert notice.endswith("`wandb sync /runs/a/wandb/offline-run-1`")


def test_an_online_failure_says_why_in_one_line_and_logs_offline(wandb_unreachable, tmp_path, caplog):
    wandb_unreachable(ConnectionError("api.wandb.ai unreachable\nretrying would not help"))
    with caplog.at_level(logging.INFO, logger="sip_train.loggers"):
        logger = loggers.wandb_logger(save_dir=str(tmp_path))
    loggers.wandb.finish()
    assert logger.experiment.settings.mode == "offline"
    ours = [r for r in caplog.records if r.name == "sip_train.loggers"]
    warnings = [r.getMessage() for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "api.wandb.ai unreachable" in warnings[0]
    assert sum("wandb sync" in r.getMessage() for r in ours) == 1


def test_disabled_logs_nothing_to_wandb_and_the_csv_still_works(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    summary = train(tiny_config("logger=wandb", "problem=exp", "trainer.max_steps=2", "figure_examples=0"))
    assert summary["status"] == "completed"
    assert not (tmp_path / "wandb").exists()
    assert pd.read_csv(tmp_path / "metrics.csv")["val/x_l1"].notna().sum() == 2


def wandb_multirun(sweep_dir: Path, *extra: str) -> list[WandbRun]:
    """The W&B runs of `train.py -m` over two learning rates of a tiny exp problem, in job order."""
    command = [sys.executable, "train.py", "-m", "problem=exp", "optimizer=adam", "optimizer.lr=0.01,0.001",
               "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.accelerator=cpu",
               "trainer.log_every_n_steps=1", "data.batch_size=4", "data.val_size=4", "threads=1",
               f"hydra.sweep.dir={sweep_dir}", *extra]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return [WandbRun(job) for job in sorted(p.parent for p in sweep_dir.glob("*/summary.json"))]


def test_multirun_jobs_share_a_group_and_carry_their_swept_values(tmp_path):
    runs = wandb_multirun(tmp_path / "lr_check", "figure_examples=0")
    assert len(runs) == 2
    assert {run.run.run_group for run in runs} == {"lr_check"}
    assert sorted(config_value(run.config, "optimizer.lr") for run in runs) == [0.001, 0.01]
    for run in runs:
        lr = config_value(run.config, "optimizer.lr")
        assert f"optimizer.lr={lr}" in run.run.display_name
        assert set(run.run.tags) >= {"exp", "adam"}
        assert config_value(run.config, "data.batch_size") == 4 and config_value(run.config, "trainer.max_steps") == 2
    assert len({run.run.display_name for run in runs}) == 2


def test_an_ensemble_members_run_shows_what_its_single_runs_run_shows(tmp_path):
    singles = wandb_multirun(tmp_path / "basic" / "lr_check", "figure_examples=1")
    members = wandb_multirun(tmp_path / "ensemble" / "lr_check", "figure_examples=1", "hydra/launcher=ensemble")
    assert len(singles) == len(members) == 2
    step = loggers.STEP_METRIC

    def logged(run: WandbRun) -> dict[int, set[str]]:
        """step -> the keys logged at that step"""
        keys: dict[int, set[str]] = {}
        for row in run.history:
            keys.setdefault(row[step], set()).update(key for key in row if not key.startswith("_") and key != step)
        return keys

    for single, member in zip(singles, members):
        assert (member.run.run_group, member.run.display_name, set(member.run.tags)) == \
               (single.run.run_group, single.run.display_name, set(single.run.tags))
        # the same values at the same steps; the step time from the first log step on (a single run's first one
        # is measured only from its second step)
        timed = {at: keys - {"time/step_ms"} for at, keys in logged(member).items()}
        assert "val/examples" in logged(single)[2] and timed == {at: keys - {"time/step_ms"} for at, keys in logged(single).items()}
        assert all("time/step_ms" in logged(member)[at] for at, keys in logged(single).items() if "time/step_ms" in keys)
        for key in ("val/x_l1", "train/objective"):
            ours, theirs = ([row[key] for row in run.history if key in row] for run in (member, single))
            assert ours == pytest.approx(theirs, rel=2e-5)
        images = [[row["val/examples"] for row in run.history if "val/examples" in row] for run in (member, single)]
        assert [[image["width"], image["height"]] for image in images[0]] == \
               [[image["width"], image["height"]] for image in images[1]]
        assert member.summary["status"] == single.summary["status"] == "completed"
        assert member.summary["val/x_l1"]["last"] == pytest.approx(single.summary["val/x_l1"]["last"], rel=2e-5)
        for key in ("optimizer.lr", "seed", "data.batch_size", "trainer.max_steps", "problem._target_"):
            assert config_value(member.config, key) == config_value(single.config, key)
