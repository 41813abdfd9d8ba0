"""`train(cfg)`: compose the objects of a run, fit, validate at the end and write summary.json."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
import wandb
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from sip_train.callbacks import DivergedError, DivergenceGuard, Preemption, StepProgressBar, StepTimer
from sip_train.checkpoints import (LAST, check_same_run, checkpoint_dir, read_checkpoint, resolve_resume,
                                   truncate_metrics)
from sip_train.module import InverseProblemModule
from sip_train.summary import write_summary

log = logging.getLogger(__name__)


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """Which config-group options this run uses (problem, optimizer, ...), when run through Hydra."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}


class ConfigError(ValueError):
    """A configuration value that cannot work, found before training starts."""


def root_cause(error: BaseException) -> BaseException:
    """The innermost ValueError or TypeError of a chain: the message written for the user
    (Hydra wraps constructor errors in its own exception; ours may wrap a library's)."""
    found = error
    while error is not None:
        if isinstance(error, (ValueError, TypeError)) and not isinstance(error, InstantiationException):
            found = error
        error = error.__cause__
    return found


def _trainer_options(cfg: DictConfig) -> DictConfig:
    """The trainer block, with max_time also accepted as a number of seconds."""
    options = cfg.trainer.copy()
    if isinstance(options.get("max_time"), (int, float)):
        options.max_time = {"seconds": float(options.max_time)}
    return options


def _check_run_settings(cfg: DictConfig) -> None:
    """Values that no constructor checks: fail before training with the key, the value and what is allowed."""
    def positive_int(key: str, value: Any, allow_none: bool = False) -> None:
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}={value!r} is invalid: must be a positive integer{' or null' if allow_none else ''}")

    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        raise ValueError(f"seed={cfg.seed!r} is invalid: must be a non-negative integer")
    positive_int("threads", cfg.get("threads"), allow_none=True)
    positive_int("trainer.val_check_interval", cfg.trainer.get("val_check_interval"))
    if isinstance(cfg.figure_examples, bool) or not isinstance(cfg.figure_examples, int) or cfg.figure_examples < 0:
        raise ValueError(f"figure_examples={cfg.figure_examples!r} is invalid: must be a non-negative integer")
    max_steps, max_time = cfg.trainer.get("max_steps", -1), cfg.trainer.get("max_time")
    if max_time is None:
        positive_int("trainer.max_steps", max_steps)
    elif isinstance(max_steps, bool) or not isinstance(max_steps, int) or (max_steps < 1 and max_steps != -1):
        raise ValueError(f"trainer.max_steps={max_steps!r} is invalid: must be a positive integer (or -1 with max_time)")


def _base_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The identifying part of summary.json: which problem, rule, network, seed and sizes."""
    choices = group_choices(cfg)

    def name(group: str) -> str:
        return choices.get(group, cfg[group]._target_.rsplit(".", 1)[-1].lower())

    return {"problem": name("problem"), "optimizer": name("optimizer"), "network": name("network"),
            "seed": cfg.seed, "lr": cfg.optimizer.get("lr"), "batch_size": cfg.data.get("batch_size"),
            "run_dir": str(run_dir), "status": "failed", "steps": 0}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one network on one problem with one update rule; returns the run summary.

    Everything the run produces lands in `cfg.run_dir`: checkpoints/, metrics.csv, figures/,
    the W&B run, and summary.json (written even when training fails, diverges or is interrupted).
    A run directory that already holds a checkpoint is continued (`resume`, `ckpt_path`).
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    is_rank_zero = rank_zero_only.rank == 0
    summary = _base_summary(cfg, run_dir)
    try:
        _check_run_settings(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed, workers=True, verbose=False)
        resume_from = resolve_resume(run_dir, cfg.get("ckpt_path"), cfg.get("resume", True))
        module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, cfg.figure_examples,
                                      cfg.get("compile", False))
        if resume_from is not None:
            saved = read_checkpoint(resume_from)
            check_same_run(resume_from, saved, dict(module.hparams))
            if is_rank_zero:
                truncate_metrics(run_dir / "metrics.csv", saved["global_step"])
            del saved
        data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
        last_checkpoint = checkpoint_dir(run_dir) / LAST
        timer = StepTimer()
        callbacks = [
            timer,
            ModelCheckpoint(dirpath=checkpoint_dir(run_dir), filename="best-step{step}", auto_insert_metric_name=False,
                            monitor="val/x_l1", mode="min", save_top_k=1, save_last=True,
                            enable_version_counter=False),
            DivergenceGuard(str(last_checkpoint), cfg.get("divergence_check_every", 10)),
            Preemption(),
            *([StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []),
        ]
        loggers = [instantiate(block) for block in cfg.logger.values()]
        trainer: Trainer = instantiate(_trainer_options(cfg), default_root_dir=str(run_dir), logger=loggers,
                                       callbacks=callbacks)
    except (ValueError, TypeError, InstantiationException) as error:
        summary["status"] = f"failed: {root_cause(error)}"
        if is_rank_zero:
            write_summary(run_dir, summary)
        raise ConfigError(str(root_cause(error))) from error
    start = time.perf_counter()
    if resume_from is not None:
        log.info("continuing from %s", resume_from)
    try:
        if cfg.get("validate_at_start") and resume_from is None:
            trainer.validate(module, datamodule=data, verbose=False)  # learning curves start at step 0
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        if module.last_validated_step != trainer.global_step:
            trainer.validate(module, datamodule=data, verbose=False)
        trainer.save_checkpoint(last_checkpoint, weights_only=False)  # the final state, whatever the validation schedule
        summary["status"] = "completed"
    except DivergedError as error:
        summary.update(status="diverged", diverged_step=error.step)
        log.error("%s (lr=%s); the last finite checkpoint is %s", error, cfg.optimizer.get("lr"), last_checkpoint)
    except (SIGTERMException, KeyboardInterrupt, SystemExit):
        summary["status"] = "interrupted"
        log.warning("interrupted at step %d; continue with the same command and run directory", trainer.global_step)
        raise
    except Exception as error:
        summary["status"] = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        metrics = trainer.callback_metrics
        summary.update(
            steps=trainer.global_step,
            wall_time_s=time.perf_counter() - start,
            step_time_ms_median=timer.median_ms,
            x_l1=float(metrics["val/x_l1"]) if "val/x_l1" in metrics else None,
            y_l2=float(metrics["val/y_l2"]) if "val/y_l2" in metrics else None,
            **{k.removeprefix("val/"): float(v) for k, v in metrics.items()
               if k.startswith("val/") and k not in ("val/x_l1", "val/y_l2")},
            peak_gpu_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            last_checkpoint=str(last_checkpoint) if last_checkpoint.exists() else None,
            best_checkpoint=callbacks[1].best_model_path or None,
        )
        if is_rank_zero:
            write_summary(run_dir, summary)
        if wandb.run is not None:
            wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            wandb.finish()
    log.info("%s/%s: %s after %d steps, val x_l1 = %s (run dir %s)", summary["problem"], summary["optimizer"],
             summary["status"], summary["steps"], summary["x_l1"], run_dir)
    return summary
