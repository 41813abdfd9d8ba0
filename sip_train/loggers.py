"""Loggers that survive a resume: a CSV file that is appended to, and Weights & Biases that never
blocks a run (online when logged in, offline otherwise) and continues its run id."""
from __future__ import annotations

import logging
import netrc
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

import csv

import wandb
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True if an API key is in WANDB_API_KEY or in the netrc entry of the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str = "auto") -> str:
    """The W&B mode to use: WANDB_MODE wins, then `mode`; "auto" is online only with credentials."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode not in MODES and mode != "dryrun":
        raise ValueError(f"logger.wandb.mode={mode!r} is invalid: choose one of {list(MODES)}")
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return "offline" if mode == "dryrun" else mode


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but a metrics.csv left by an earlier session is continued, not clobbered."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as file:
                self.metrics_keys = sorted(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """An existing run directory is expected when resuming: no warning."""


class ResumableCSVLogger(CSVLogger):
    """CSVLogger writing <save_dir>/metrics.csv, appending to it when a run is resumed."""

    def __init__(self, save_dir: str) -> None:
        super().__init__(save_dir=save_dir, name="", version="")

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def _run_id(save_dir: Path) -> str:
    """The W&B run id of this run directory: read back on resume, created on the first start."""
    path = save_dir / "wandb_run_id"
    if not path.is_file():
        path.write_text(uuid.uuid4().hex[:12])
    return path.read_text().strip()


def wandb_logger(
    save_dir: str,
    project: str = "sip-train",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    run_id: str | None = None,
    init_timeout_s: float = 60.0,
) -> WandbLogger:
    """A Lightning W&B logger whose run is created now, in a mode that cannot prompt or hang.

    Online runs that fail to start (no network, bad key) fall back to offline with a warning.
    The run id is kept in <save_dir>/wandb_run_id, so a resumed run continues the same W&B run.
    """
    if rank_zero_only.rank != 0:  # DDP workers: Lightning gives them a dummy experiment
        return WandbLogger(save_dir=str(save_dir), project=project)
    chosen = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run_id = run_id or _run_id(Path(save_dir))
    options = dict(project=project, name=name, group=group, tags=list(tags or []), dir=str(save_dir), id=run_id,
                   resume="allow", reinit="finish_previous")
    try:
        run = wandb.init(mode=chosen, settings=wandb.Settings(init_timeout=init_timeout_s, silent=True), **options)
    except Exception as error:  # noqa: BLE001 - any failure to go online must not stop training
        if chosen != "online":
            raise
        log.warning("W&B could not start online (%s); logging offline instead", error)
        run = wandb.init(mode="offline", settings=wandb.Settings(silent=True), **options)
    return WandbLogger(experiment=run, save_dir=str(save_dir), log_model=False)
