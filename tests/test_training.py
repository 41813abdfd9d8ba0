"""End-to-end runs at test size: SIP lowers the error, runs leave a complete run directory."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from sip_train.module import InverseProblemModule, build_components
from sip_train.run import train
from sip_train.summary import read_summary

SHORT = ["trainer.max_steps=40", "trainer.val_check_interval=20", "problem.resolution=16", "data.batch_size=8",
         "data.val_size=16", "data.val_batch_size=8", "network.levels=3"]


def validation_curve(run_dir) -> list[float]:
    return pd.read_csv(run_dir / "metrics.csv")["val/x_l1"].dropna().tolist()


@pytest.mark.parametrize("problem", ["poisson", "heat"])
def test_sip_training_lowers_the_validation_error_and_beats_adam(problem, tiny_config, tmp_path):
    sip = train(tiny_config(f"problem={problem}", "optimizer=sip", *SHORT, f"run_dir={tmp_path / 'sip'}"))
    adam = train(tiny_config(f"problem={problem}", "optimizer=adam", *SHORT, f"run_dir={tmp_path / 'adam'}"))
    sip_curve, adam_curve = validation_curve(tmp_path / "sip"), validation_curve(tmp_path / "adam")
    assert sip_curve[0] == adam_curve[0]  # same seed: same initial network, same validation set
    assert sip["x_l1"] == pytest.approx(sip_curve[-1])
    assert sip["x_l1"] < 0.75 * sip_curve[0]
    assert sip["x_l1"] < adam["x_l1"]


def test_a_run_directory_holds_summary_metrics_checkpoints_and_figures(tiny_config, tmp_path):
    summary = train(tiny_config("problem=heat", "optimizer=adam", "trainer.max_steps=5", "trainer.val_check_interval=2",
                                "figure_examples=2"))
    assert summary == read_summary(tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 5
    assert (summary["problem"], summary["optimizer"], summary["network"]) == ("heat", "adam", "unet")
    assert summary["wall_time_s"] > 0 and summary["step_time_ms_median"] > 0
    assert summary["x_l1"] > 0 and summary["y_l2"] > 0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    for column in ("train/objective", "train/x_l1", "train/y_l2", "val/x_l1", "val/y_l2", "time/step_ms"):
        assert metrics[column].notna().any(), column
    assert metrics["val/x_l1"].dropna().iloc[-1] == pytest.approx(summary["x_l1"])
    # validated at steps 0, 2, 4 and at the final step 5: the last checkpoint holds step 5
    assert metrics.dropna(subset=["val/x_l1"])["step"].tolist() == [0, 2, 4, 5]
    checkpoint = torch.load(summary["last_checkpoint"], weights_only=False)
    assert checkpoint["global_step"] == 5
    assert summary["best_checkpoint"]
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == [
        "learning_curves.png", "val_step0000000.png", "val_step0000002.png", "val_step0000004.png", "val_step0000005.png"]


def test_load_from_checkpoint_rebuilds_the_trained_model(tiny_config, tmp_path):
    summary = train(tiny_config("problem=poisson", "optimizer=sip", "problem.resolution=16", "network.levels=2"))
    model = InverseProblemModule.load_from_checkpoint(summary["last_checkpoint"]).eval()
    state = torch.load(summary["last_checkpoint"], weights_only=False)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    x_true, y_target = model.problem.sample(2, torch.Generator().manual_seed(0))
    assert model(y_target).shape == x_true.shape


def test_the_same_seed_gives_the_same_initial_network_whatever_the_rule(tiny_config):
    networks = {}
    for rule in ("sgd", "adam", "sip"):
        cfg = tiny_config(f"optimizer={rule}")
        networks[rule] = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)[1].state_dict()
    other_seed = tiny_config("seed=1")
    other = build_components(other_seed.problem, other_seed.optimizer, other_seed.network, other_seed.seed)[1]
    for name, value in networks["sgd"].items():
        assert torch.equal(value, networks["adam"][name]) and torch.equal(value, networks["sip"][name])
    assert not all(torch.equal(v, other.state_dict()[k]) for k, v in networks["sgd"].items())


def test_wandb_logs_offline_without_an_account(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    summary = train(tiny_config("logger=wandb", "trainer.max_steps=2"))
    assert summary["status"] == "completed"
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
