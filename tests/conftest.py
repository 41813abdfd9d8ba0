"""Shared test set-up: one torch thread, and Hydra configs composed the way train.py composes them."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

#: Overrides that shrink any run to test size (a 16x16 grid, a few steps, CSV logging).
TINY = [
    "logger=csv",
    "trainer.accelerator=cpu",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "data.batch_size=4",
    "data.val_size=8",
    "data.val_batch_size=4",
    "figure_examples=2",
]


def options(group: str) -> list[str]:
    """The options of a config group, i.e. the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_config(overrides: list[str], run_dir: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides, with Hydra's runtime info set as in a real run.

    `run_dir` stands in for Hydra's output directory, which only exists in a real run.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
        del cfg.hydra
    return cfg


@pytest.fixture
def tiny_config(tmp_path):
    """A factory of test-sized configs: tiny_config("problem=heat", ...) -> DictConfig."""

    def make(*overrides: str) -> DictConfig:
        run_dir = None if any(o.startswith("run_dir=") for o in overrides) else tmp_path
        return compose_config([*TINY, *overrides], run_dir)

    return make
