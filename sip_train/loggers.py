"""Loggers that survive a resume: a CSV file that is appended to, and Weights & Biases that never
blocks a run (online when logged in, offline otherwise) and continues its run id."""
from __future__ import annotations

import csv
import logging
import netrc
import os
import uuid
from pathlib import Path
from urllib.parse import urlparse

import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from omegaconf import DictConfig, OmegaConf
from wandb.sdk.wandb_run import Run

from sip_train.console import offline_notice

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")
STEP_METRIC = "trainer/global_step"  # what Lightning's WandbLogger logs as the step: updates done


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


def multirun_job() -> tuple[str, str] | None:
    """(multirun directory name, the job's swept `key=value,...`) inside a `train.py -m` job, else None."""
    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    if hydra.mode != RunMode.MULTIRUN or hydra.job.get("num") is None:
        return None
    return Path(hydra.sweep.dir).name, hydra.job.override_dirname


def choice_tags() -> list[str]:
    """Tags naming the run's problem, update rule and experiment (their config-group choices)."""
    if not HydraConfig.initialized():
        return []
    choices = HydraConfig.get().runtime.choices
    return [str(choices[group]) for group in ("problem", "optimizer", "experiment") if choices.get(group)]


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

    Online runs that fail to start (no network, bad key) say why in one line and log offline;
    an offline run says in one line where it is and how to upload it. The run id is kept in
    <save_dir>/wandb_run_id, so a resumed run continues the same W&B run. In a multirun job the
    group defaults to the multirun directory's name and the name carries the swept key=values;
    the problem, rule and experiment are added as tags.
    """
    if rank_zero_only.rank != 0:  # DDP workers: Lightning gives them a dummy experiment
        return WandbLogger(save_dir=str(save_dir), project=project)
    chosen = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    run_id = run_id or os.environ.get("WANDB_RUN_ID") or _run_id(Path(save_dir))  # a W&B agent names its run
    job = multirun_job()
    if job is not None:
        group = group or job[0]
        name = f"{name} {job[1]}".strip() if job[1] else name
    tags = list(dict.fromkeys([*(tags or []), *choice_tags()]))
    options = dict(project=project, name=name, group=group, tags=tags, dir=str(save_dir), id=run_id,
                   resume="allow", reinit="finish_previous")
    try:
        run = wandb.init(mode=chosen, settings=wandb.Settings(init_timeout=init_timeout_s, silent=True), **options)
    except Exception as error:  # noqa: BLE001 - any failure to go online must not stop training
        if chosen != "online":
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        log.warning("W&B could not go online (%s: %s); logging offline instead", type(error).__name__, reason)
        chosen = "offline"
        run = wandb.init(mode=chosen, settings=wandb.Settings(silent=True), **options)
    if chosen == "offline":
        log.info(offline_notice(Path(run.settings.sync_dir).resolve()))
    return WandbLogger(experiment=run, save_dir=str(save_dir), log_model=False)


def wandb_run(loggers: list[Logger]) -> Run | None:
    """The live W&B run among a trainer's loggers (None if W&B is off, disabled or on a DDP worker)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and isinstance(logger.experiment, Run) and not logger.experiment.disabled:
            return logger.experiment
    return None


def describe_run(loggers: list[Logger], cfg: DictConfig, primary_metric: str = "x_l1") -> None:
    """Give the W&B run the whole resolved run config and make the training step every chart's x-axis.

    Lightning only defines its step metric for runs it creates itself; this run is created by
    `wandb_logger`, so every metric is tied to `trainer/global_step` (updates done) here, and
    the problem's primary validation metric keeps its minimum (best) and last value in the summary.
    """
    run = wandb_run(loggers)
    if run is None:
        return
    config = OmegaConf.to_container(cfg, resolve=True)
    if HydraConfig.initialized():
        hydra = HydraConfig.get()
        config["choices"] = {k: v for k, v in hydra.runtime.choices.items()  # problem, optimizer, experiment, ...
                             if isinstance(v, str) and not k.startswith("hydra/")}
        config["overrides"] = list(hydra.overrides.task)  # the command line, swept values included
    run.config.update(config, allow_val_change=True)
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
    run.define_metric(f"val/{primary_metric}", step_metric=STEP_METRIC, summary="min,last")


def finish_wandb(summary: dict) -> None:
    """Put the run's outcome (status, steps, wall time, final metrics) in the W&B summary and close the run."""
    if wandb.run is None:
        return
    wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str)) and
                              not isinstance(v, bool)})
    wandb.finish()
