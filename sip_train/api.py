"""`train(overrides)`: a run from Python (a notebook, a script) with the same config, checks and records as
`sip-train`, without a Hydra app."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from sip_train.config import compose_config
from sip_train.hydra_errors import CONFIG_ERRORS, one_line


def train(overrides: Sequence[str] = (), run_dir: str | Path | None = None,
          config_dirs: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Train as `sip-train <overrides>` would, in this process; returns the run's summary (status, steps, the
    final validation metrics such as x_l1 and y_l2, times; also in <run_dir>/summary.json).

    Args:
        overrides: Hydra overrides, e.g. ["problem=exp", "optimizer=sip", "trainer.max_steps=100"].
        run_dir: where the run's records go (default: `hydra.run.dir`, as sip-train's). An existing run
            directory of the same run is continued, as with sip-train.
        config_dirs: folders of your own configs (what `--config-dir` adds).
    Raises:
        sip_train.run.ConfigError: one line naming a bad key or value, before training.
    """
    from sip_train import console
    from sip_train.run import ConfigError, train as run_training

    console.silence_known_warnings()
    if not logging.getLogger().handlers:  # a notebook or script without logging set up: show the run's lines
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = compose_config(overrides, run_dir, config_dirs)
    except CONFIG_ERRORS as error:
        raise ConfigError(one_line(error)) from error
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return run_training(cfg)  # which writes .hydra/ once its checks pass, as for sip-train
