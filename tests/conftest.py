"""Shared test set-up: one torch thread, and Hydra configs composed the way train.py composes them."""
from __future__ import annotations

import logging
import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import pytest  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sip_train.config import CONF, compose_config  # noqa: E402,F401 - compose_config is used by the tests

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

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
    "figure_examples=0",  # drawing costs most of a tiny run: tests of figures ask for them
]

#: Overrides that make each problem test-sized.
TINY_PROBLEM = {
    "poisson": ["problem.resolution=8"],
    "heat": ["problem.resolution=8"],
    "fluid": ["problem.resolution=8", "network.levels=2"],
    "wavepacket": ["problem.lbfgsb_max_iter=20"],
    "oscillators": ["problem.steps=16", "data.train_size=16", "updates_per_step=1"],
}


def options(group: str) -> list[str]:
    """The options of a config group, i.e. the YAML files in conf/<group>/."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def write_sweep(conf_dir, name, experiment=None, **spec):
    """A sweep file <conf_dir>/sweep/<name>.yaml, as a user writes one in their own config folder."""
    (conf_dir / "sweep").mkdir(parents=True, exist_ok=True)
    content = {"sweep": spec, "hydra": {"mode": "MULTIRUN"}}
    if experiment:
        content["defaults"] = [{"override /experiment": experiment}]
    (conf_dir / "sweep" / f"{name}.yaml").write_text("# @package _global_\n" + OmegaConf.to_yaml(content))
    return [f"sweep={name}", f"hydra.searchpath=[file://{conf_dir}]"]


@pytest.fixture
def tiny_config(tmp_path):
    """A factory of test-sized configs: tiny_config("problem=heat", ...) -> DictConfig."""

    def make(*overrides: str) -> DictConfig:
        run_dir = None if any(o.startswith("run_dir=") for o in overrides) else tmp_path
        return compose_config([*TINY, *overrides], run_dir)

    return make


@pytest.fixture(autouse=True)
def no_handlers_on_closed_streams():
    """After each test, drop the log handlers that write to a stream pytest has closed: Hydra, run in this
    process, attaches handlers to the test's captured stdout, and later tests' log lines would fail on them."""
    yield
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


@pytest.fixture
def wandb_unreachable(monkeypatch):
    """W&B cannot go online: `wandb.init(mode="online")` raises `error`; other modes work. Call it with the
    exception to raise; WANDB_MODE is set to online."""
    from sip_train import loggers

    def make(error: Exception) -> None:
        monkeypatch.setenv("WANDB_MODE", "online")
        real_init = loggers.wandb.init

        def init(mode, **kwargs):
            if mode == "online":
                raise error
            return real_init(mode=mode, **kwargs)

        monkeypatch.setattr(loggers.wandb, "init", init)

    return make
