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
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from sip_train.callbacks import StepProgressBar, StepTimer
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
    """The innermost exception of a chain (Hydra wraps constructor errors in its own)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def _trainer_options(cfg: DictConfig) -> DictConfig:
    """The trainer block, with max_time also accepted as a number of seconds."""
    options = cfg.trainer.copy()
    if isinstance(options.get("max_time"), (int, float)):
        options.max_time = {"seconds": float(options.max_time)}
    return options


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train one network on one problem with one update rule; returns the run summary.

    Everything the run produces lands in `cfg.run_dir`: checkpoints/, metrics.csv, figures/,
    the W&B run, and summary.json (written even when training fails or is interrupted).
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.get("threads"):
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed, workers=True, verbose=False)
    choices = group_choices(cfg)
    summary: dict[str, Any] = {
        "problem": choices.get("problem", cfg.problem._target_.rsplit(".", 1)[-1].lower()),
        "optimizer": choices.get("optimizer", cfg.optimizer._target_.rsplit(".", 1)[-1].lower()),
        "network": choices.get("network", cfg.network._target_.rsplit(".", 1)[-1].lower()),
        "seed": cfg.seed, "lr": cfg.optimizer.lr, "batch_size": cfg.data.batch_size, "run_dir": str(run_dir),
        "status": "failed", "steps": 0,
    }
    try:
        module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, cfg.figure_examples)
        data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
        timer = StepTimer()
        checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-step{step}",
                                     auto_insert_metric_name=False, monitor="val/x_l1", mode="min", save_top_k=1,
                                     save_last=True)
        loggers = [instantiate(block) for block in cfg.logger.values()]
        progress_bar = [StepProgressBar()] if cfg.trainer.get("enable_progress_bar", True) else []
        trainer: Trainer = instantiate(_trainer_options(cfg), default_root_dir=str(run_dir), logger=loggers,
                                       callbacks=[timer, checkpoint, *progress_bar])
    except (ValueError, TypeError, InstantiationException) as error:
        summary["status"] = f"failed: {root_cause(error)}"
        write_summary(run_dir, summary)
        raise ConfigError(str(root_cause(error))) from error
    start = time.perf_counter()
    try:
        if cfg.get("validate_at_start") and not cfg.get("ckpt_path"):
            trainer.validate(module, datamodule=data, verbose=False)  # learning curves start at step 0
        trainer.fit(module, datamodule=data, ckpt_path=cfg.get("ckpt_path"))
        if not trainer.interrupted and module.last_validated_step != trainer.global_step:
            trainer.validate(module, datamodule=data, verbose=False)
            trainer.save_checkpoint(checkpoint.format_checkpoint_name({}, checkpoint.CHECKPOINT_NAME_LAST))
        summary["status"] = "interrupted" if trainer.interrupted else "completed"
    except Exception as error:
        summary["status"] = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        metrics = trainer.callback_metrics
        last = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}.ckpt"
        summary.update(
            steps=trainer.global_step,
            wall_time_s=time.perf_counter() - start,
            step_time_ms_median=timer.median_ms,
            x_l1=float(metrics["val/x_l1"]) if "val/x_l1" in metrics else None,
            y_l2=float(metrics["val/y_l2"]) if "val/y_l2" in metrics else None,
            **{k.removeprefix("val/"): float(v) for k, v in metrics.items()
               if k.startswith("val/") and k not in ("val/x_l1", "val/y_l2")},
            last_checkpoint=str(last) if last.exists() else None,
            best_checkpoint=checkpoint.best_model_path or None,
        )
        write_summary(run_dir, summary)
        if wandb.run is not None:
            wandb.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
            wandb.finish()
    log.info("%s/%s: %s after %d steps, val x_l1 = %s (run dir %s)", summary["problem"], summary["optimizer"],
             summary["status"], summary["steps"], summary["x_l1"], run_dir)
    return summary
