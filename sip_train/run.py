"""`train(cfg)`: compose the objects of a run, fit, validate at the end and write summary.json."""
from __future__ import annotations

import logging
import platform
import shlex
import traceback
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import (
    MisconfigurationException,
    SIGTERMException,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from sip_train import console, exit_codes, values
from sip_train.callbacks import (
    BufferAverage,
    DivergedError,
    DivergenceGuard,
    LatestValidation,
    Preemption,
    RunRecord,
    StepTimer,
)
from sip_train.checkpoints import (
    LAST,
    check_same_run,
    checkpoint_dir,
    read_checkpoint,
    resolve_resume,
    run_identity,
    truncate_metrics,
)
from sip_train.learning_curves import LearningCurves
from sip_train.loggers import describe_run, finish_wandb
from sip_train.memory import check_memory
from sip_train.module import InverseProblemModule
from sip_train.progress import progress_callback
from sip_train.resolvers import config_identity, identity_hash
from sip_train.run_directory import holds_run, save_hydra_files, set_aside
from sip_train.startup import (
    check_combinations,
    check_devices,
    check_resolvable,
    check_types,
)
from sip_train.summary import read_summary, write_summary

log = logging.getLogger(__name__)


def group_choices(cfg: DictConfig) -> dict[str, str]:
    """Which config-group options this run uses (problem, optimizer, ...), when run through Hydra."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str)}


class ConfigError(ValueError):
    """A configuration value that cannot work, found before training starts."""


#: Packages whose own `raise` of a ValueError or TypeError during start-up refuses a configuration value.
CHECKING_PACKAGES = ("sip_train", "hydra", "omegaconf", "lightning")


def is_refusal(error: BaseException) -> bool:
    """Whether an error raised while a run starts refuses a configuration value (one line, exit 2) rather
    than being a bug in the code the run calls (its traceback kept, exit 1).

    A refusal is a ValueError or TypeError (or Lightning's MisconfigurationException) raised by a `raise`
    statement of a constructor (any class refusing its arguments, the user's own too) or of the checking
    code of this package, Hydra, OmegaConf or Lightning. An error raised anywhere else, e.g. by torch inside
    a problem's simulate called by the start-up checks, is the code's own.
    """
    cause = root_cause(error)
    if isinstance(cause, ConfigError):
        return True
    if not isinstance(cause, (ValueError, TypeError, MisconfigurationException)) or cause.__traceback__ is None:
        return False
    origin = traceback.extract_tb(cause.__traceback__)[-1]
    if not (origin.line or "").startswith("raise"):
        return False
    module_path = Path(origin.filename).parts
    return origin.name in ("__init__", "__post_init__") or any(package in module_path for package in CHECKING_PACKAGES)


def root_cause(error: BaseException) -> BaseException:
    """The innermost ValueError, TypeError or Lightning MisconfigurationException of a chain: the message
    written for the user (Hydra wraps constructor errors in its own exception; ours may wrap a library's)."""
    found = error
    while error is not None:
        if isinstance(error, (ValueError, TypeError, MisconfigurationException)) and \
                not isinstance(error, InstantiationException):
            found = error
        error = error.__cause__
    return found


def start_failure(error: BaseException) -> dict[str, Any]:
    """The summary status and exit code of a start that failed: a refused value (exit code 2, its one line)
    or an error of the code the checks called (exit code 1, its type and message)."""
    if is_refusal(error):
        return {"status": f"failed: {root_cause(error)}", "exit_code": exit_codes.CONFIG_ERROR}
    return {"status": f"failed: {type(error).__name__}: {error}", "exit_code": exit_codes.FAILED}


def check_resume(cfg: DictConfig, run_dir: Path, earlier_run: bool) -> None:
    """resume=false with a checkpoint of its own in a directory that holds another run is refused."""
    ckpt_path = cfg.get("ckpt_path")
    if not cfg.get("resume", True) and ckpt_path not in (None, "", "last") and earlier_run:
        raise ConfigError(f"resume=false with ckpt_path={ckpt_path} in {run_dir}, which holds another run, would "
                          "mix two runs' records: give this run its own directory (name=<tag> or hydra.run.dir=...)")


def _trainer_options(cfg: DictConfig) -> DictConfig:
    """The trainer block, with max_time also accepted as a number of seconds."""
    options = cfg.trainer.copy()
    if isinstance(options.get("max_time"), (int, float)):
        with open_dict(options):
            options.max_time = {"seconds": float(options.max_time)}
            options._convert_ = "all"  # Lightning wants a plain dict
    return options


def _check_run_settings(cfg: DictConfig) -> None:
    """Values that no constructor checks: fail before training with the key, the value and what is allowed."""
    values.integer("seed", cfg.seed, "[0, inf)")
    values.integer("threads", cfg.get("threads"), optional=True)
    values.integer("trainer.val_check_interval", cfg.trainer.get("val_check_interval"))
    values.integer("trainer.log_every_n_steps", cfg.trainer.get("log_every_n_steps", 50))
    values.integer("figure_examples", cfg.figure_examples, "[0, inf)")
    max_steps = cfg.trainer.get("max_steps", -1)
    if cfg.trainer.get("max_time") is None or max_steps != -1:  # -1: no step limit, only with max_time
        values.integer("trainer.max_steps", max_steps)


def _base_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The identifying part of summary.json: which problem, rule, network, seed and sizes."""
    choices = group_choices(cfg)

    def name(group: str) -> str:
        return choices.get(group, cfg[group]._target_.rsplit(".", 1)[-1].lower())

    def value(key: str) -> Any:  # a value that does not resolve is reported by the start-up checks
        return OmegaConf.select(cfg, key, throw_on_resolution_failure=False)

    identity = config_identity(cfg)  # what a sweep compares its jobs by

    return {"problem": name("problem"), "optimizer": name("optimizer"), "network": name("network"),
            "seed": value("seed"), "lr": value("optimizer.lr"), "batch_size": value("data.batch_size"),
            "run_dir": str(run_dir), "status": "failed", "exit_code": exit_codes.FAILED, "steps": 0,
            "config_hash": identity_hash(identity), "config_identity": identity}


def _device_name(trainer: Trainer) -> str:
    """The model of the device a run trains on (GPU name, else the CPU's)."""
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or device.type


def _accelerator(trainer: Trainer) -> str:
    """The accelerator kind a run trains on: cpu, cuda, mps, ..."""
    return trainer.strategy.root_device.type


def _is_finished(run_dir: Path, checkpoint: dict, max_steps: int) -> bool:
    """Whether a run directory holds a completed run that a rerun could not extend (max_steps reached)."""
    if not 0 < max_steps <= checkpoint["global_step"] or not (run_dir / "summary.json").is_file():
        return False
    summary = read_summary(run_dir)
    return summary.get("status") == "completed" and summary.get("steps") == checkpoint["global_step"]


def continue_command(run_dir: Path, hydra: DictConfig | None = None) -> str:
    """The command that continues a run: train.py with this run's overrides and its run directory; `hydra`: the
    run's Hydra config (default: the current job's)."""
    if hydra is None and HydraConfig.initialized():
        hydra = HydraConfig.get()
    overrides = list(hydra.overrides.task) if hydra is not None else []
    return shlex.join(["python", "train.py", *overrides, f"hydra.run.dir={run_dir}"])


def report_divergence(error: DivergedError, lr: Any, last_checkpoint: Path, command: str) -> None:
    """The one error line of a diverged run: what went non-finite when, its lr, and how to go on from its last
    finite checkpoint."""
    log.error("%s (lr=%s); the last finite checkpoint is %s; to continue from it (with another lr, use "
              "ckpt_path=... in a new run directory): %s", error, lr, last_checkpoint, command)


def _rounded(value: Any) -> str:
    """A metric for the console: 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def train(cfg: DictConfig, step_timer: StepTimer | None = None) -> dict[str, Any]:
    """Train one network on one problem with one update rule; returns the run summary. `step_timer`: the
    run's StepTimer, or a subclass that also measures (the benchmarks' hook into each step).

    Everything the run produces lands in `cfg.run_dir`: checkpoints/, metrics.csv, figures/,
    the W&B run, .hydra/ and summary.json (written even when training fails, diverges or is
    interrupted; its "exit_code" is the one train.py exits with, see `sip_train.exit_codes`).
    A run directory that already holds a checkpoint of the same run (same identity, see
    `sip_train.checkpoints.run_identity`) is continued (`resume`, `ckpt_path`); one of another
    run is refused; a completed one with nothing left to do is left as it is. `resume=false`
    moves an earlier run there into <run_dir>/replaced-<date>/ and starts afresh. A refused start
    (a bad value, another run's checkpoint, too little memory) changes nothing in a directory that
    holds a run; in an empty one it leaves a summary.json saying why.

    Raises:
        ConfigError: one line, when the start is refused. Errors of the code a run calls (problem,
            rule, network, solver) propagate as they are, also when a start-up check called it.
    """
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    earlier_run = holds_run(run_dir)  # a refused start must leave it as it is
    is_rank_zero = rank_zero_only.rank == 0
    summary = _base_summary(cfg, run_dir)
    threads_before = torch.get_num_threads()
    try:
        return _train(cfg, run_dir, earlier_run, is_rank_zero, summary, step_timer or StepTimer())
    finally:
        torch.set_num_threads(threads_before)  # the next job of an in-process multirun gets its own setting


def _train(cfg: DictConfig, run_dir: Path, earlier_run: bool, is_rank_zero: bool, summary: dict[str, Any],
           timer: StepTimer) -> dict:
    try:
        check_resolvable(cfg)
        _check_run_settings(cfg)
        check_types(cfg)
        check_devices(cfg)
        if cfg.get("threads"):
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed, workers=True, verbose=False)
        resume, ckpt_path = cfg.get("resume", True), cfg.get("ckpt_path")
        resume_from = resolve_resume(run_dir, ckpt_path, resume)
        check_resume(cfg, run_dir, earlier_run)
        saved = read_checkpoint(resume_from) if resume_from is not None else None
        module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, cfg.figure_examples,
                                      cfg.get("compile", False), cfg.get("updates_per_step", 1))
        data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
        last_checkpoint = checkpoint_dir(run_dir) / LAST
        validation = LatestValidation()
        guard = DivergenceGuard(str(last_checkpoint), cfg.get("divergence_check_every", 10))
        preemption = Preemption()
        best = ModelCheckpoint(dirpath=checkpoint_dir(run_dir), filename="best-step{step}", auto_insert_metric_name=False,
                               monitor=f"val/{module.problem.primary_metric}", mode="min", save_top_k=1, save_last=True,
                               enable_version_counter=False)
        curves = LearningCurves()
        callbacks = [timer, validation, best, guard, preemption, BufferAverage(), curves,
                     *([progress_callback()] if cfg.trainer.get("enable_progress_bar", True) else [])]
        trainer: Trainer = instantiate(_trainer_options(cfg), default_root_dir=str(run_dir), logger=False,
                                       callbacks=callbacks)
        identity = run_identity(cfg, trainer.precision, _accelerator(trainer), trainer.world_size)
        record = RunRecord(identity)
        trainer.callbacks.append(record)
        check_combinations(cfg, module.problem, module.network, module.rule, trainer)
        if saved is not None:
            check_same_run(resume_from, saved, identity)
            if _is_finished(run_dir, saved, trainer.max_steps):
                log.info("nothing to do: %s already completed %d steps (raise trainer.max_steps to continue it)",
                         run_dir, saved["global_step"])
                return read_summary(run_dir)
        check_memory(module.problem, module.network, data, trainer.strategy.root_device)
    except (ValueError, TypeError, InstantiationException) as error:
        summary.update(start_failure(error))
        if is_rank_zero and not earlier_run:
            write_summary(run_dir, summary)
        if is_refusal(error):
            raise ConfigError(str(root_cause(error))) from error
        raise
    # the checks passed: from here on the run directory is this run's
    if is_rank_zero:
        if earlier_run and resume_from is None:  # a fresh start (resume=false, or nothing to continue from)
            log.info("starting afresh: the earlier records in %s are moved to %s", run_dir, set_aside(run_dir).name)
        elif saved is not None:
            truncate_metrics(run_dir / "metrics.csv", saved["global_step"])
        save_hydra_files(cfg, HydraConfig.get() if HydraConfig.initialized() else None, run_dir)
    del saved
    trainer.loggers = [instantiate(block) for block in cfg.logger.values()]  # after the checks: W&B starts a run
    describe_run(trainer.loggers, cfg, module.problem.primary_metric)
    summary["inverse"] = getattr(getattr(module.rule, "inverse", None), "name", None)  # what inverse=auto picked
    if is_rank_zero:
        device = f"{_accelerator(trainer)} ({_device_name(trainer)})"
        device += f" x {trainer.world_size}" if trainer.world_size > 1 else ""
        log.info(console.banner(summary["problem"], summary["optimizer"], summary["network"], device, run_dir,
                                summary["inverse"]))
    if resume_from is not None:
        log.info("continuing from %s", resume_from)
    try:
        if cfg.get("validate_at_start") and resume_from is None:
            trainer.validate(module, datamodule=data, verbose=False)  # learning curves start at step 0
        trainer.fit(module, datamodule=data, ckpt_path=str(resume_from) if resume_from else None)
        guard.check(trainer, module)  # also when max_time stopped the run between two checks
        if module.last_validated_step != trainer.global_step:
            trainer.validate(module, datamodule=data, verbose=False)
        trainer.save_checkpoint(last_checkpoint, weights_only=False)  # the final state, whatever the validation schedule
        summary.update(status="completed", exit_code=exit_codes.COMPLETED)
    except DivergedError as error:
        summary.update(status="diverged", exit_code=exit_codes.DIVERGED, diverged_step=error.step)
        report_divergence(error, cfg.optimizer.get("lr"), last_checkpoint, continue_command(run_dir))
    except (SIGTERMException, KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into SystemExit
        summary.update(status="interrupted", exit_code=exit_codes.INTERRUPTED)
        log.warning("interrupted at step %d; continue with: %s", trainer.global_step, continue_command(run_dir))
    except Exception as error:
        summary["status"] = f"failed: {type(error).__name__}: {error}"
        raise
    finally:
        primary = module.problem.primary_metric
        summary.update(
            steps=trainer.global_step,
            sessions=record.sessions,
            wall_time_s=record.wall_time_s,
            **timer.statistics(),
            primary_metric=primary,
            **{primary: None, "y_l2": None, **validation.metrics},
            metrics_step=validation.step,
            accelerator=identity["trainer"]["accelerator"],
            device_name=_device_name(trainer),
            device_count=trainer.world_size,
            precision=identity["trainer"]["precision"],
            peak_gpu_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
            last_checkpoint=str(last_checkpoint) if last_checkpoint.exists() else None,
            best_checkpoint=best.best_model_path or None,
        )
        if is_rank_zero:
            write_summary(run_dir, summary)
            curves.draw(trainer)
        finish_wandb(summary)
    log.info("%s/%s: %s after %d steps, val %s = %s (run dir %s)", summary["problem"], summary["optimizer"],
             summary["status"], summary["steps"], primary, _rounded(summary[primary]), run_dir)
    if summary["status"] == "interrupted":
        preemption.hand_on()  # under submitit: requeue the job, which continues from the checkpoint just saved
    return summary
