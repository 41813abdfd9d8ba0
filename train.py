"""Train a network on an inverse physics problem: `python train.py problem=heat optimizer=sip`.

Hydra composes conf/config.yaml with the overrides; `--multirun` (-m) sweeps them. Returns the
final validation x_l1 so Hydra sweepers (e.g. Optuna) can minimise it.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sip_train.run import ConfigError, train

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except ConfigError as error:  # a bad configuration value: one clear line, no traceback
        log.error("error: %s", error)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return float("nan")  # recorded in the job's summary.json; the other jobs go on
        sys.exit(f"error: {error}")
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        log.exception("job failed; its summary.json records why, the sweep goes on")
        return float("nan")
    if summary["status"] == "diverged" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(f"error: training diverged at step {summary['diverged_step']}; see {summary['run_dir']}")
    return summary["x_l1"] if summary["status"] == "completed" else float("nan")


if __name__ == "__main__":
    main()
