"""Named sweeps: a grid or list of train.py overrides run as Hydra multirun jobs, then one table
and a set of figures for the lot (the paper's figures are such comparisons).

How a sweep runs (`run_sweep`, behind sweep.py):
1. conf/sweep/<name>.yaml is expanded into jobs (`spec.expand`); each job's run directory is
   <sweep dir>/<job name>, the name being its swept `key=value` pairs, so it is the same every time.
2. Jobs whose directory holds a finished run (summary.json status completed or diverged) of the
   same overrides are skipped; a job that failed, was interrupted or never ran is run (again),
   and train.py continues it from its last checkpoint if it has one.
3. The rest go to the launcher plugin chosen with `hydra/launcher=...` (basic, joblib, submitit,
   see `launch`), with train.py's task function: a job that raises or diverges is recorded in its
   summary.json and the others go on.
4. `report.report` reads every job's summary.json and metrics.csv into results.csv, results.md,
   curves.csv and PNG figures in the sweep directory, and logs them to W&B when W&B is on.

The sweep directory is multirun/<sweep name> unless `hydra.sweep.dir=...` says otherwise.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.hydra import Hydra
from hydra.types import TaskFunction
from omegaconf import DictConfig, OmegaConf

from sip_train.sweep.launch import hydra_app, launch, multirun_config, threads_per_job
from sip_train.sweep.report import report, wandb_settings
from sip_train.sweep.spec import Job, Sweep, SweepError, expand, is_completed, load_sweep, override

__all__ = ["Job", "Sweep", "SweepError", "expand", "load_sweep", "plan", "report", "run_sweep"]

log = logging.getLogger("sweep")
SWEEP_DIR_KEY = "hydra.sweep.dir"


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str], str | None]:
    """(hydra.* overrides, task overrides, the hydra.sweep.dir value if given)."""
    hydra, task, sweep_dir = [], [], None
    for item in overrides:
        key, _, value = item.partition("=")
        if key == SWEEP_DIR_KEY:
            sweep_dir = value.strip("'\"")
        elif key.lstrip("+~").startswith(("hydra.", "hydra/")):
            hydra.append(item)
        else:
            task.append(item)
    return hydra, task, sweep_dir


def _set_by(overrides: Sequence[str], key: str) -> bool:
    return any(item.lstrip("+~").split("=", 1)[0] == key for item in overrides)


def plan(sweep: Sweep, hydra: Hydra, overrides: Sequence[str] = ()) -> tuple[Path, list[Job], DictConfig]:
    """Expand a sweep for the chosen launcher: (sweep dir, jobs, multirun config).

    Jobs get `threads=N` when the launcher config sets hydra.job.env_set.OMP_NUM_THREADS, and
    `logger.wandb.group=<sweep name>` when they log to W&B (unless the overrides set these).
    """
    hydra_overrides, task_overrides, sweep_dir = split_overrides(overrides)
    sweep_dir = Path(sweep_dir or Path("multirun") / sweep.name).resolve()
    jobs = expand(sweep, task_overrides)
    config = multirun_config(hydra, sweep_dir, hydra_overrides, jobs[0].overrides)
    extra = []
    if threads_per_job(config) and not _set_by(jobs[0].overrides, "threads"):
        extra.append(override("threads", threads_per_job(config)))
    if wandb_settings(config) is not None and not _set_by(jobs[0].overrides, "logger.wandb.group"):
        extra.append(override("logger.wandb.group", sweep.name))
    return sweep_dir, expand(sweep, [*task_overrides, *extra]), config


def run_sweep(
    name_or_path: str,
    overrides: Sequence[str] = (),
    task_function: TaskFunction | None = None,
    report_only: bool = False,
    list_only: bool = False,
) -> dict[str, Any]:
    """Run the jobs of a sweep that are not completed yet, then aggregate all of them.

    Args:
        name_or_path: a conf/sweep/ name or a sweep YAML file.
        overrides: Hydra overrides; hydra.* ones (hydra/launcher=joblib, hydra.sweep.dir=...)
            configure the multirun, the others go to every job.
        task_function: the Hydra task function of one job (train.py's `main`).
        report_only: aggregate what is there, run nothing.
        list_only: only plan: run and write nothing.

    Returns:
        `report.report`'s dict plus "sweep_dir", "jobs", "completed" (names of the jobs completed
        before) and "launched" (names of the jobs run now); with list_only the last four only.
    """
    sweep = load_sweep(name_or_path)
    with hydra_app() as hydra:
        sweep_dir, jobs, config = plan(sweep, hydra, overrides)
        completed = [job.name for job in jobs if is_completed(job, sweep_dir)]
        pending = [job for job in jobs if job.name not in completed]
        plan_only = {"sweep_dir": sweep_dir, "jobs": jobs, "completed": completed, "launched": []}
        if list_only:
            return plan_only
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save({"sweep": sweep.name, "jobs": {job.name: list(job.overrides) for job in jobs}},
                       sweep_dir / "sweep.yaml")
        log.info("sweep %s: %d jobs in %s, %d completed before", sweep.name, len(jobs), sweep_dir, len(completed))
        if pending and not report_only:
            if task_function is None:
                raise SweepError("run_sweep needs the task function of a job to run jobs")
            launch(hydra, config, pending, task_function)
            plan_only["launched"] = [job.name for job in pending]
    return {**report(sweep, jobs, sweep_dir, config), **plan_only}
