"""Train a network on an inverse physics problem: `python train.py problem=heat optimizer=sip`.

Hydra composes conf/config.yaml with the overrides; `--multirun` (-m) sweeps them. Returns the
final value of the problem's primary validation metric (x_l1 for most) so Hydra sweepers (e.g.
Optuna) can minimise it.

Exit status (also written into summary.json as "exit_code", see sip_train/exit_codes.py):
0 completed (or nothing left to do), 1 failed during training, 2 configuration error (one line,
before training), 3 diverged (the last finite checkpoint is kept), 4 interrupted or preempted
(SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C: every finished step is checkpointed; rerun to continue).
Under submitit the preemption signal is handed on after the checkpoint, and submitit requeues
the job with its own status.
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sip_train import console, exit_codes, resolvers  # noqa: F401 - resolvers registers ${run_name:}
from sip_train.run import ConfigError, train

console.silence_known_warnings()

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
    except ConfigError as error:  # a bad configuration value: one clear line, no traceback
        if multirun:
            log.error("error: %s", error)
            return float("nan")  # recorded in the job's summary.json; the other jobs go on
        print(f"error: {error}", file=sys.stderr)
        sys.exit(exit_codes.CONFIG_ERROR)
    except Exception:
        if not multirun:
            raise
        log.exception("job failed; its summary.json records why, the sweep goes on")
        return float("nan")
    if summary["status"] == "completed" or multirun:
        value = summary.get(summary.get("primary_metric", "x_l1")) if summary["status"] == "completed" else None
        return float("nan") if value is None else value
    if summary["status"] == "diverged":
        print(f"error: training diverged at step {summary['diverged_step']}; see {summary['run_dir']}", file=sys.stderr)
    sys.exit(summary["exit_code"])


if __name__ == "__main__":
    main()
