"""The Hydra callback that ends a plain `-m` multirun with a comparison of its jobs in its sweep directory
(comparison.md, .csv, .png; see sip_train.comparison). A named sweep is left to sip-sweep's own report."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class WriteComparison(Callback):
    """on_multirun_end: compare the jobs that ran in hydra.sweep.dir (a failing comparison fails no job)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("sweep"):
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir() or not any(sweep_dir.rglob("summary.json")):
            return
        from sip_train.comparison import compare

        try:
            result = compare([sweep_dir], title=f"multirun {sweep_dir}")
        except Exception:  # noqa: BLE001 - the jobs' results stand whatever happens to the comparison
            log.exception("could not write the comparison of %s", sweep_dir)
            return
        log.info("comparison of the jobs: %s, %s", result["markdown"], result["figure"])
