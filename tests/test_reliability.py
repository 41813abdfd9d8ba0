"""A killed, diverged or misconfigured run loses nothing and says what happened."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import fsspec.implementations.local
import pandas as pd
import pytest
import torch

from conftest import REPO
from fault_log import record
from sip_train import exit_codes, loggers
from sip_train.data import TRAIN_STREAM, SyntheticData, stream_generator
from sip_train.module import InverseProblemModule
from sip_train.problems.exp import Exp
from sip_train.problems.poisson import Poisson
from sip_train.run import ConfigError, train
from sip_train.summary import read_summary

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
# ~40 ms steps: long enough to be killed mid-way, short enough for the suite.
RUN = ["logger=csv", "trainer.enable_progress_bar=false", "problem=heat", "optimizer=sip", "problem.resolution=16",
       "network.levels=3", "data.batch_size=8", "data.val_size=8", "trainer.max_steps=120",
       "trainer.val_check_interval=30", "trainer.log_every_n_steps=5", "figure_examples=0", "threads=1"]


def train_command(run_dir, *extra: str) -> list[str]:
    return [sys.executable, "train.py", *RUN, f"hydra.run.dir={run_dir}", *extra]


def validation_rows(run_dir) -> pd.DataFrame:
    metrics = pd.read_csv(run_dir / "metrics.csv")
    return metrics.dropna(subset=["val/x_l1"])[["step", "val/x_l1"]].reset_index(drop=True)


def test_a_run_killed_with_sigterm_resumes_and_ends_like_an_uninterrupted_one(tmp_path):
    uninterrupted, interrupted = tmp_path / "uninterrupted", tmp_path / "interrupted"
    subprocess.run(train_command(uninterrupted), cwd=REPO, env=ENV, check=True, capture_output=True, timeout=300)

    process = subprocess.Popen(train_command(interrupted), cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (interrupted / "metrics.csv").exists() or len(validation_rows(interrupted)) < 2:
        assert process.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == exit_codes.INTERRUPTED
    summary = read_summary(interrupted)
    assert summary["status"] == "interrupted" and summary["exit_code"] == exit_codes.INTERRUPTED
    assert 30 <= summary["steps"] < 120
    assert torch.load(interrupted / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == summary["steps"]

    subprocess.run(train_command(interrupted), cwd=REPO, env=ENV, check=True, capture_output=True, timeout=300)
    resumed, reference = read_summary(interrupted), read_summary(uninterrupted)
    assert resumed["status"] == "completed" and resumed["steps"] == reference["steps"] == 120
    assert resumed["x_l1"] == pytest.approx(reference["x_l1"], rel=1e-4)
    rows, reference_rows = validation_rows(interrupted), validation_rows(uninterrupted)
    assert rows["step"].tolist() == reference_rows["step"].tolist() == [0, 30, 60, 90, 120]
    assert rows["val/x_l1"].tolist() == pytest.approx(reference_rows["val/x_l1"].tolist(), rel=1e-4)
    assert resumed["sessions"] == 2 and resumed["wall_time_s"] > summary["wall_time_s"]
    record("SIGTERM to a train.py process", "after the second validation",
           f"exit 4, checkpoint at step {summary['steps']}; rerun completed with the same validation curve",
           "the step in progress at most")


def test_a_huge_learning_rate_ends_as_diverged_with_a_finite_checkpoint(tiny_config, tmp_path):
    summary = train(tiny_config("problem=poisson", "optimizer=sgd", "optimizer.lr=1e6", "trainer.max_steps=20",
                                "trainer.val_check_interval=10", "divergence_check_every=1"))
    assert summary["status"] == "diverged"
    assert 0 <= summary["diverged_step"] < 20
    assert read_summary(tmp_path)["status"] == "diverged"
    model = InverseProblemModule.load_from_checkpoint(summary["last_checkpoint"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_command_line_reports_divergence_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "logger=csv", f"hydra.run.dir={tmp_path}", "optimizer=sgd", "optimizer.lr=1e6",
         "problem.resolution=16", "network.levels=2", "data.batch_size=4", "data.val_size=4", "trainer.max_steps=10",
         "trainer.enable_progress_bar=false", "divergence_check_every=1"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == exit_codes.DIVERGED
    assert result.stderr.strip().splitlines()[-1].startswith("error: training diverged at step")
    record("NaN (lr=1e6)", f"step {read_summary(tmp_path)['diverged_step']}",
           f"diverged, exit {result.returncode}, one line; last finite checkpoint kept", "the non-finite steps only")


def test_a_configuration_error_is_one_line_once_with_its_own_exit_code(tmp_path):
    result = subprocess.run([sys.executable, "train.py", "logger=csv", f"hydra.run.dir={tmp_path}",
                             "problem.resolution=abc"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == exit_codes.CONFIG_ERROR
    output = (result.stdout + result.stderr).strip().splitlines()
    assert output == ["error: problem.resolution='abc' is invalid: must be an integer"]
    assert read_summary(tmp_path)["status"] == "failed: problem.resolution='abc' is invalid: must be an integer"


def test_ranks_draw_distinct_training_samples_and_share_the_validation_set():
    data = SyntheticData(Poisson(resolution=8), batch_size=4, val_size=4, seed=0)
    rank0, rank1 = data.train_batch(3, torch.device("cpu"), 0), data.train_batch(3, torch.device("cpu"), 1)
    assert not torch.equal(rank0[0], rank1[0])
    assert torch.equal(rank0[0], data.train_batch(3, torch.device("cpu"), 0)[0])  # a pure function of the step
    assert not torch.equal(rank0[0], data.train_batch(4, torch.device("cpu"), 0)[0])
    validation = data.validation_set(torch.device("cpu"))[0]
    training = torch.cat([data.train_batch(step, torch.device("cpu"))[0] for step in range(25)])
    assert torch.cdist(validation.flatten(1), training.flatten(1)).min() > 1e-3  # disjoint from training data


def test_batches_drawn_together_are_each_a_pure_function_of_the_step():
    """steps_per_draw=5: steps 5-9 are the rows of one sample call, in whatever order steps are asked for
    (a resume mid-draw), distinct per step and per rank."""
    cpu = torch.device("cpu")
    data = SyntheticData(Exp(), batch_size=4, val_size=4, seed=0, steps_per_draw=5)
    forward = [data.train_batch(step, cpu)[0] for step in range(12)]
    backward = [data.train_batch(step, cpu)[0] for step in reversed(range(12))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(forward, backward))
    assert torch.unique(torch.cat(forward)).numel() == 48
    one_call = Exp().sample(20, stream_generator(cpu, 0, TRAIN_STREAM, 0, 1, 5))[0]
    assert torch.equal(torch.cat(forward[5:10]), one_call)
    assert not torch.equal(data.train_batch(3, cpu, 1)[0], forward[3])


def test_a_finite_training_set_cycles_through_every_example():
    data = SyntheticData(Poisson(resolution=8), batch_size=3, val_size=4, train_size=6, seed=0)
    seen = torch.cat([data.train_batch(step, torch.device("cpu"))[0] for step in range(2)])
    assert torch.unique(seen.flatten(1), dim=0).shape[0] == 6


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=abc", "optimizer.lr='abc' is invalid: must be a number"),
        ("optimizer.lr=-1", "optimizer.lr=-1 is invalid: must be a positive number"),
        ("data.batch_size=1.5", "data.batch_size=1.5 is invalid: must be an integer"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: must be a positive integer"),
        ("data.steps_per_draw=0", "data.steps_per_draw=0 is invalid: must be a positive integer"),
        ("problem.resolution=abc", "problem.resolution='abc' is invalid: must be an integer"),
        ("network.batch_norm=maybe", "network.batch_norm='maybe' is invalid: must be true or false"),
        ("experiment=paper_fig6_fluid optimizer=sgd",
         "optimizer.lr='${paper_lr.${hydra:runtime.choices.optimizer}}' is invalid: paper_lr has no 'sgd'; "
         "choose one of ['adam', 'sip'] or set optimizer.lr directly"),
        ("trainer.accelerator=gpu", "trainer.accelerator='gpu' is invalid: no CUDA GPU is available on this machine"),
        ("network=fno optimizer=adahessian", "optimizer=adahessian is invalid with network=fno: the network has complex"),
        ("network=fno optimizer=hessian_free", "optimizer=hessian_free is invalid with network=fno: the network has"),
        ("optimizer=hessian_free trainer.precision=bf16-mixed",
         "trainer.precision='bf16-mixed' is invalid with optimizer=hessian_free: its curvature products need full"),
        ("seed=-3", "seed=-3 is invalid: must be a non-negative integer"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is invalid: must be a positive integer"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0 is invalid: must be a positive integer"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 is invalid: must be a positive integer"),
        ("problem.solver=multigrid", "problem.solver='multigrid' is invalid: choose one of ['spectral', 'cg']"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt: no such checkpoint file"),
        ("ckpt_path=last", "ckpt_path=last: no checkpoint in"),
    ],
)
def test_each_class_of_bad_value_names_key_value_and_what_is_allowed(override, message, tiny_config, tmp_path):
    try:
        cfg = tiny_config(*override.split())
    except ValueError as error:  # an unresolvable interpolation is found as the config is composed
        assert str(error).startswith(message)
        outcome = "refused when composed"
    else:
        with pytest.raises(ConfigError) as error:
            train(cfg)
        assert str(error.value).startswith(message) and "\n" not in str(error.value)
        summary = read_summary(tmp_path)
        assert summary["status"] == f"failed: {error.value}" and summary["exit_code"] == exit_codes.CONFIG_ERROR
        outcome = "refused before training, summary.json status failed, exit 2"
    record("bad value", override, f"{outcome}: {message[:70]}", "nothing (no training started)")


def test_a_corrupt_checkpoint_is_named(tiny_config, tmp_path):
    corrupt = tmp_path / "broken.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=f"checkpoint {corrupt} is corrupt or unreadable"):
        train(tiny_config(f"ckpt_path={corrupt}", f"run_dir={tmp_path / 'run'}"))
    assert read_summary(tmp_path / "run")["exit_code"] == exit_codes.CONFIG_ERROR
    record("corrupt checkpoint", "at start-up (ckpt_path)", "refused before training, naming the file, exit 2",
           "nothing")


def test_an_interrupted_checkpoint_write_leaves_the_previous_checkpoint_intact(tiny_config, tmp_path, monkeypatch):
    summary = train(tiny_config("trainer.max_steps=2"))
    last = summary["last_checkpoint"]
    before = open(last, "rb").read()

    def write_half_then_die(self, data):
        self.f.write(data[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(fsspec.implementations.local.LocalFileOpener, "write", write_half_then_die)
    module = InverseProblemModule.load_from_checkpoint(last)
    trainer = __import__("lightning").pytorch.Trainer(logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(last)
    assert open(last, "rb").read() == before
    record("process killed while writing a checkpoint", "half-way through last.ckpt",
           "the previous last.ckpt is intact (written to a temporary file, then renamed)", "the steps since it")


def test_wandb_mode_follows_credentials_and_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert loggers.resolve_mode("auto") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    assert loggers.resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert loggers.resolve_mode("auto") == "disabled"


def test_wandb_falls_back_to_offline_when_it_cannot_go_online(wandb_unreachable, tmp_path):
    wandb_unreachable(TimeoutError("no network"))
    logger = loggers.wandb_logger(save_dir=str(tmp_path), name="fallback")
    assert logger.experiment.settings.mode == "offline"
    run_id = logger.experiment.id
    loggers.wandb.finish()
    assert loggers.wandb_logger(save_dir=str(tmp_path)).experiment.id == run_id  # resumed under the same id
    loggers.wandb.finish()
    record("no network for W&B", "wandb.init online times out", "logs offline under the same run id, training goes on",
           "nothing (sync the offline run later)")


def test_resuming_into_a_directory_of_a_different_run_names_what_differs(tiny_config, tmp_path):
    train(tiny_config("problem.resolution=16", "network.levels=2", "trainer.max_steps=2"))
    with pytest.raises(ConfigError, match=r"belongs to a different run \(network.levels: 2 there, 3 now\)"):
        train(tiny_config("problem.resolution=16", "network.levels=3", "trainer.max_steps=4"))
