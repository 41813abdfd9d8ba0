"""The `ensemble` launcher: a multirun's jobs grouped into vectorised ensembles.

    python train.py -m problem=sine optimizer=adam seed=0,1,2,3 optimizer.lr=1e-3,3e-3 hydra/launcher=ensemble
    python sweep.py sweep=sine_xi hydra/launcher=ensemble hydra.launcher.max_members=16
    python train.py -m ... hydra/launcher=ensemble hydra/launcher/inner=joblib hydra.launcher.inner.n_jobs=2

Jobs that differ only in the seed, the optimizer's scalar settings and the problem parameters the problem
declares (`sip_train.ensemble.grouping`) form groups of up to `max_members`. Each group is one job of the
inner launcher (`inner`, the config group hydra/launcher/inner: Hydra's basic one by default, one job after
another in this process; joblib for several processes, submitit for SLURM jobs), whose task
(`group_task.GroupTask`) trains the group in one process, every member in the run directory, with the
`.hydra/` files, that it would have had as a job of its own, and returns each member's JobReturn. Jobs that
cannot be members (their rule, network or settings say so) are jobs of the inner launcher of their own, with
one line per group saying why.
"""
from __future__ import annotations

import logging
import math
import shlex
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.sip_ensemble_launcher.group_task import GroupTask, job_directory
from sip_train.sweep.spec import quote

log = logging.getLogger(__name__)


class EnsembleLauncher(Launcher):
    """Groups vectorisable jobs into ensembles of up to `max_members` and hands each group, as one job, and
    every other job to the `inner` launcher."""

    #: It composes every job's config before it runs any (to group them): a bad override stops the sweep there,
    #: so the sweeper need not compose them all once more to check them.
    composes_every_job_first = True

    def __init__(self, max_members: int = 64, inner: Any = None) -> None:
        if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
            raise ValueError(f"hydra.launcher.max_members={max_members!r} is invalid: must be a positive integer")
        self.max_members = max_members
        self.inner_config = inner
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _task_config(self, config: DictConfig) -> DictConfig:
        """The job's run config, resolved in its own Hydra context (its run directory, its choices)."""
        HydraConfig.instance().set_config(config)
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            subdir = OmegaConf.select(config, "hydra.sweep.subdir")
            config.hydra.runtime.output_dir = str(Path(config.hydra.sweep.dir, str(subdir)).absolute())
        HydraConfig.instance().set_config(config)
        task = OmegaConf.to_container(config, resolve=True)
        task.pop("hydra")
        return OmegaConf.create(task)

    def _classify(self, config: DictConfig) -> tuple[str | None, str | None]:
        """(why the job runs alone, None) or (None, the key of its group)."""
        from sip_train.ensemble.grouping import group_key, why_single  # here: Hydra imports every plugin at start

        try:
            task = self._task_config(config)
            reason = why_single(task)
            return (reason, None) if reason is not None else (None, group_key(task))
        except Exception:  # noqa: BLE001 - the job's own start reports what is wrong with it, as a single run would
            return "its configuration does not build (the job says why)", None

    def _command(self) -> str:
        """The command that runs this multirun again, which continues its interrupted jobs."""
        hydra = [item for item in self.config.hydra.overrides.hydra if not item.startswith("hydra.mode=")]
        return shlex.join(["python", "train.py", "-m", *self.config.hydra.overrides.task, *hydra])

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        configs = [job_config(self.hydra_context, self.config, overrides, initial_job_idx + i)
                   for i, overrides in enumerate(job_overrides)]
        groups: dict[str, list[int]] = defaultdict(list)
        single: dict[str, list[int]] = defaultdict(list)  # reason -> jobs
        for i, config in enumerate(configs):
            reason, key = self._classify(config)
            if key is not None:
                groups[key].append(i)
            else:
                single[reason].append(i)
        inner_jobs: list[list[int]] = []  # the jobs of each job of the inner launcher
        for reason, jobs in single.items():
            log.info("ensemble: %d job(s) run one by one: %s", len(jobs), reason)
            inner_jobs += [[i] for i in jobs]
        for jobs in groups.values():
            parts = math.ceil(len(jobs) / self.max_members)
            for part in range(parts):  # evenly sized parts of at most max_members
                members = jobs[part * len(jobs) // parts: (part + 1) * len(jobs) // parts]
                if len(members) == 1:
                    log.info("ensemble: 1 job alone (nothing to group it with)")
                else:
                    log.info("ensemble: %d jobs train together: #%s", len(members),
                             ", #".join(str(initial_job_idx + i) for i in members))
                    for i in members:
                        log.info("\t#%d : %s", initial_job_idx + i, " ".join(filter_overrides(job_overrides[i])))
                inner_jobs.append(members)
        task = GroupTask(self.task_function, self.hydra_context,
                         {job_directory(configs[jobs[0]].hydra): [configs[i] for i in jobs]
                          for jobs in inner_jobs if len(jobs) > 1}, self._command())
        config = self.config.copy()
        with open_dict(config):
            config.hydra.launcher = self.inner_config
        launcher = Plugins.instance().instantiate_launcher(hydra_context=self.hydra_context, task_function=task,
                                                           config=config)
        # each job of the inner launcher in the directory of its (first) job: the inner one numbers from its start
        pinned = [_pinned(job_overrides[jobs[0]], configs[jobs[0]]) for jobs in inner_jobs]
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        for jobs, job_return in zip(inner_jobs, launcher.launch(pinned, initial_job_idx=initial_job_idx)):
            if len(jobs) == 1:
                returns[jobs[0]] = job_return
            elif job_return.status == JobStatus.COMPLETED:
                for i, member_return in zip(jobs, job_return.return_value):
                    returns[i] = member_return
            else:  # the group's job itself failed (before or around the training, which records its own failures)
                for i in jobs:
                    returns[i] = JobReturn(overrides=list(job_overrides[i]), status=JobStatus.FAILED,
                                           _return_value=job_return._return_value)
        return returns


def job_config(hydra_context: HydraContext, sweep_config: DictConfig, overrides: Sequence[str], number: int) -> DictConfig:
    """A job's full config (Hydra's part included) as Hydra's basic launcher composes it."""
    config = hydra_context.config_loader.load_sweep_config(sweep_config, list(overrides))
    with open_dict(config):
        config.hydra.job.id = config.hydra.job.num = number
    return config


def _pinned(overrides: Sequence[str], config: DictConfig) -> list[str]:
    """A job's overrides with its directory in this multirun fixed (the inner launcher numbers jobs its own way)."""
    if any(item.startswith("hydra.sweep.subdir=") for item in overrides):
        return list(overrides)
    return [*overrides, f"hydra.sweep.subdir={quote(str(config.hydra.sweep.subdir))}"]
