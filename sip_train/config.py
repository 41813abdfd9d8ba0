"""Compose conf/config.yaml outside a Hydra app (tests, benchmarks, tools), as train.py would."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from sip_train.startup import check_resolvable

CONF = Path(__file__).resolve().parents[1] / "conf"


def compose_config(overrides: Sequence[str], run_dir: str | Path | None = None) -> DictConfig:
    """conf/config.yaml with Hydra overrides, fully resolved as in a real run (`${hydra:runtime.choices...}`
    included), so it no longer depends on Hydra's global state: a later composition cannot change it.
    `run_dir` stands in for Hydra's output directory, which exists only in a real run.

    Raises:
        ValueError: one line naming the key, if an interpolation cannot be resolved.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
        del cfg.hydra
    check_resolvable(cfg)
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # (OmegaConf.resolve rejects list results)
    OmegaConf.set_struct(resolved, True)
    return resolved
