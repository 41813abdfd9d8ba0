"""Hydra callbacks: one ends a plain `-m` multirun with a comparison of its jobs in its sweep directory
(comparison.md, .csv, .png; see sip_train.comparison; a named sweep is left to sip-sweep's own report), the
other notes whether a single run's directory is new, so that a refused start can leave nothing behind."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

#: The run directory of this process's single run and its topmost folder this command creates (None if the
#: run directory exists already).
new_run_directory: tuple[Path, Path] | None = None


class NoteNewRunDirectory(Callback):
    """on_run_start (before Hydra creates hydra.run.dir): remember whether the directory is new."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        global new_run_directory
        HydraConfig.instance().set_config(config)  # as Hydra does next: the directory's name reads the choices
        directory = Path(config.hydra.run.dir).absolute()
        missing = [folder for folder in (directory, *directory.parents) if not folder.exists()]
        new_run_directory = (directory, missing[-1]) if missing else None


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
