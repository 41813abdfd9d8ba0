"""One member of an ensemble: a job's config built into the objects its single run would have, and its records."""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch import seed_everything
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

from sip_train.checkpoints import check_same_run, read_checkpoint, resolve_resume, run_identity
from sip_train.data import SyntheticData
from sip_train.loggers import describe_run, finish_wandb
from sip_train.module import InverseProblemModule
from sip_train.memory import check_memory
from sip_train.run import _base_summary, _check_run_settings, _is_finished, check_resume, start_failure
from sip_train.run_directory import holds_run, save_hydra_files, set_aside
from sip_train.startup import check_combinations, check_devices, check_resolvable, check_types
from sip_train.validation_figures import WANDB_KEY, saved_validation_figures

log = logging.getLogger(__name__)

PRECISION = "32-true"  # ensembles train in full precision (other precisions run as single jobs)
#: What `check_combinations` asks of a trainer, as an ensemble trains: one process, full precision.
ENSEMBLE_TRAINER = SimpleNamespace(precision=PRECISION, world_size=1)


def is_wandb_block(block: DictConfig) -> bool:
    """Whether a logger block makes a W&B run (one per process at a time: members replay theirs at the end)."""
    return "wandb" in str(block.get("_target_", ""))


@dataclass
class Member:
    """A job of the ensemble: its config, run directory, the single run's module (problem, network, rule)
    and data, its identity, loggers and summary, and the checkpoint it continues from (if any)."""

    cfg: DictConfig
    hydra: DictConfig | None
    run_dir: Path
    summary: dict[str, Any]
    module: InverseProblemModule | None = None
    data: SyntheticData | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    loggers: list[Logger] = field(default_factory=list)
    saved: dict | None = None
    resume_from: Path | None = None
    finished: bool = False  # nothing left to do (completed before)
    earlier_run: bool = False  # the run directory held records before this start

    @property
    def problem(self):
        return self.module.problem

    def log_row(self, row: dict[str, float], step: int) -> None:
        """Write one row of metrics at `step` to the member's loggers (as the single run does)."""
        for logger in self.loggers:
            logger.log_metrics(row, step=step)
            logger.save()


def device_of(cfg: DictConfig) -> torch.device:
    """The device a job's trainer would train on: a GPU when asked for (or auto) and present, else the CPU."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def build_member(cfg: DictConfig, hydra: DictConfig | None = None) -> Member:
    """Check and build one job as `sip_train.run.train` would, through the same start-up checks, without a
    Trainer. Raises what a refused (or failing) start raises there; nothing is written yet."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    member = Member(cfg=cfg, hydra=hydra, run_dir=run_dir, summary=_base_summary(cfg, run_dir),
                    earlier_run=holds_run(run_dir))
    check_resolvable(cfg)
    _check_run_settings(cfg)
    check_types(cfg)
    check_devices(cfg)
    seed_everything(cfg.seed, workers=True, verbose=False)
    member.resume_from = resolve_resume(run_dir, cfg.get("ckpt_path"), cfg.get("resume", True))
    check_resume(cfg, run_dir, member.earlier_run)
    member.module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, cfg.figure_examples,
                                         cfg.get("compile", False), cfg.get("updates_per_step", 1))
    member.data = instantiate(cfg.data, problem=member.module.problem, seed=cfg.seed)
    member.identity = run_identity(cfg, PRECISION, device_of(cfg).type, 1)
    check_combinations(cfg, member.problem, member.module.network, member.module.rule, ENSEMBLE_TRAINER)
    if member.resume_from is not None:
        member.saved = read_checkpoint(member.resume_from)
        check_same_run(member.resume_from, member.saved, member.identity)
        member.finished = _is_finished(run_dir, member.saved, int(cfg.trainer.max_steps))
    if not member.finished:
        check_memory(member.problem, member.module.network, member.data, device_of(cfg))
    return member


def start_records(member: Member) -> None:
    """Once the member's checks passed, its run directory is its own, as in its single run: an earlier run
    there that it does not continue is set aside, its .hydra/ files are written, the inverse solver it uses
    goes into its summary and its CSV (and other non-W&B) loggers start."""
    if member.earlier_run and member.resume_from is None:
        log.info("starting afresh: the earlier records in %s are moved to %s", member.run_dir,
                 set_aside(member.run_dir).name)
    save_hydra_files(member.cfg, member.hydra.hydra if member.hydra is not None else None, member.run_dir)
    member.summary["inverse"] = getattr(getattr(member.module.rule, "inverse", None), "name", None)  # as run.train
    member.loggers = [instantiate(block) for block in member.cfg.logger.values() if not is_wandb_block(block)]


def replay_to_wandb(member: Member) -> None:
    """Give the member its own W&B run, as its single run would have: the config, every row of its
    metrics.csv at its step, each validation figure after its row, and the summary (members log to W&B one
    after another, at the end)."""
    blocks = [block for block in member.cfg.logger.values() if is_wandb_block(block)]
    if not blocks:
        return
    if member.hydra is not None:
        HydraConfig.instance().set_config(member.hydra)
    loggers = [instantiate(block) for block in blocks]
    describe_run(loggers, member.cfg, member.problem.primary_metric)
    path = member.run_dir / "metrics.csv"
    figures = saved_validation_figures(member.run_dir)
    if path.is_file():
        with path.open(newline="") as file:
            for row in csv.DictReader(file):
                step = int(float(row["step"]))
                values = {key: float(value) for key, value in row.items() if key != "step" and value != ""}
                figure = figures.pop(step, None) if any(key.startswith("val/") for key in values) else None
                for logger in loggers:
                    logger.log_metrics(values, step=step)
                    if figure is not None:  # after its validation's row, as the single run logs it
                        logger.log_image(WANDB_KEY, [str(figure)], step=step)
    finish_wandb(member.summary)


def start_error(member_cfg: DictConfig, error: BaseException) -> dict[str, Any]:
    """The summary of a job whose start failed, as `train` writes it: refused by a check (exit code 2) or an
    error of the code the checks called (exit code 1)."""
    return {**_base_summary(member_cfg, Path(member_cfg.run_dir)), **start_failure(error)}


def resolved_block(cfg: DictConfig, key: str) -> Any:
    """A config block as plain resolved data (for comparing members)."""
    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
