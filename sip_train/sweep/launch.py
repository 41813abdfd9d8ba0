"""Run a list of sweep jobs through the Hydra launcher plugin chosen by `hydra/launcher`.

Hydra's sweepers launch cartesian products; resuming a sweep needs an arbitrary list (the jobs
not completed yet). So this module does what Hydra's basic sweeper does, with our list: compose
the multirun config (the launcher choice and its settings included), instantiate the launcher
plugin and hand it the override lists, one per job, each with `hydra.sweep.subdir=<job name>`.
Every launcher (basic, joblib, submitit, ...) then runs the jobs exactly as in `train.py -m`.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from hydra import initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra._internal.hydra import Hydra
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.types import HydraContext, RunMode, TaskFunction
from omegaconf import DictConfig

from sip_train.sweep.spec import CONF, Job, quote

CONFIG_NAME = "config"


@contextmanager
def hydra_app(job_name: str = "train") -> Iterator[Hydra]:
    """Hydra set up on conf/ as train.py sets it up (job name `train`, so logs are train.log)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), job_name=job_name, version_base="1.3"):
        yield GlobalHydra.instance().hydra


def multirun_config(
    hydra: Hydra, sweep_dir: Path, hydra_overrides: Sequence[str] = (), task_overrides: Sequence[str] = ()
) -> DictConfig:
    """The composed multirun config: hydra/launcher and other hydra.* overrides, the sweep dir,
    and `task_overrides` (checked here, before any job starts)."""
    overrides = [*hydra_overrides, f"hydra.sweep.dir={quote(str(Path(sweep_dir).resolve()))}",
                 "hydra.mode=MULTIRUN", *task_overrides]
    return hydra.compose_config(CONFIG_NAME, overrides, run_mode=RunMode.MULTIRUN, with_log_configuration=False)


def threads_per_job(config: DictConfig) -> int | None:
    """Torch threads per job set by the launcher config (its hydra.job.env_set.OMP_NUM_THREADS)."""
    threads = config.hydra.job.env_set.get("OMP_NUM_THREADS")
    return int(threads) if threads is not None else None


def job_overrides(job: Job) -> list[str]:
    """The overrides a launcher gets for one job: its task overrides and its run directory."""
    return [*job.overrides, f"hydra.sweep.subdir={quote(job.name)}"]


def launch(hydra: Hydra, config: DictConfig, jobs: Sequence[Job], task_function: TaskFunction) -> Sequence[JobReturn]:
    """Run `jobs` with the launcher of the multirun `config`; returns the launcher's job returns.

    Every job's config is composed once first, so a bad override stops the sweep before any
    job runs rather than in the middle of it.
    """
    overrides = [job_overrides(job) for job in jobs]
    for job_override in overrides:
        hydra.config_loader.load_sweep_config(config, job_override)
    callbacks = Callbacks(config)
    launcher = Plugins.instance().instantiate_launcher(
        hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=callbacks),
        task_function=task_function, config=config,
    )
    callbacks.on_multirun_start(config=config, config_name=CONFIG_NAME)
    returns = launcher.launch(overrides, initial_job_idx=0)
    callbacks.on_multirun_end(config=config, config_name=CONFIG_NAME)
    return returns
