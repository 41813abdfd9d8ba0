"""The `ensemble` launcher: a multirun's jobs grouped into vectorised ensembles.

    python train.py -m problem=sine optimizer=adam seed=0,1,2,3 optimizer.lr=1e-3,3e-3 hydra/launcher=ensemble
    python sweep.py sweep=sine_xi hydra/launcher=ensemble hydra.launcher.max_members=16

Jobs that differ only in the seed, the optimizer's scalar settings and the problem parameters the problem
declares (`sip_train.ensemble.grouping`) form groups of up to `max_members`; each group trains in one
process (`sip_train.ensemble.training.train_ensemble`), every member in the run directory, with the
`.hydra/` files, that it would have had as a job of its own. Jobs that cannot be members (their rule,
network or settings say so) go to the inner launcher (`inner`, Hydra's basic one by default), with one
line per group saying why.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from collections import defaultdict
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from sip_train.sweep.spec import quote

log = logging.getLogger(__name__)


class EnsembleLauncher(Launcher):
    """Groups vectorisable jobs into ensembles of up to `max_members`, runs each group in this process and
    hands the other jobs to the `inner` launcher."""

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

    def _job_config(self, overrides: Sequence[str], index: int) -> DictConfig:
        """The job's full config (Hydra's part included) as Hydra's basic launcher composes it."""
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config):
            config.hydra.job.id = config.hydra.job.num = index
        return config

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

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # imported here, not with the module: Hydra imports every plugin at each start (even --help)
        from sip_train.ensemble.grouping import group_key, why_single

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        groups: dict[str, list[int]] = defaultdict(list)
        single: dict[str, list[int]] = defaultdict(list)  # reason -> jobs
        for i, overrides in enumerate(job_overrides):
            task = self._task_config(self._job_config(overrides, initial_job_idx + i))
            reason = why_single(task)
            if reason is None:
                groups[group_key(task)].append(i)
            else:
                single[reason].append(i)
        returns: list[JobReturn | None] = [None] * len(job_overrides)
        for reason, jobs in single.items():
            log.info("ensemble: %d job(s) run one by one: %s", len(jobs), reason)
            self._run_inner(job_overrides, jobs, initial_job_idx, returns)
        for jobs in groups.values():
            parts = math.ceil(len(jobs) / self.max_members)
            for part in range(parts):  # evenly sized parts of at most max_members
                members = jobs[part * len(jobs) // parts: (part + 1) * len(jobs) // parts]
                if len(members) == 1:
                    log.info("ensemble: 1 job alone (nothing to group it with)")
                    self._run_inner(job_overrides, members, initial_job_idx, returns)
                else:
                    self._run_group(job_overrides, members, initial_job_idx, returns)
        return returns

    def _run_inner(self, job_overrides: Sequence[Sequence[str]], jobs: list[int], first: int,
                   returns: list[JobReturn | None]) -> None:
        """Jobs run by the inner launcher, each in the run directory it has in this multirun."""
        config = self.config.copy()
        with open_dict(config):
            config.hydra.launcher = self.inner_config
        launcher = Plugins.instance().instantiate_launcher(hydra_context=self.hydra_context,
                                                           task_function=self.task_function, config=config)
        pinned = []
        for i in jobs:  # the inner launcher numbers its jobs from its own start: keep each job's directory
            overrides = list(job_overrides[i])
            if not any(item.startswith("hydra.sweep.subdir=") for item in overrides):
                subdir = OmegaConf.select(self._job_config(overrides, first + i), "hydra.sweep.subdir")
                overrides.append(f"hydra.sweep.subdir={quote(str(subdir))}")
            pinned.append(overrides)
        for i, job_return in zip(jobs, launcher.launch(pinned, initial_job_idx=first + jobs[0])):
            returns[i] = job_return

    def _run_group(self, job_overrides: Sequence[Sequence[str]], jobs: list[int], first: int,
                   returns: list[JobReturn | None]) -> None:
        """Jobs trained as one ensemble in this process: Hydra sets up each job (its directory, .hydra/ files,
        log file) as for a job of its own, then all train together."""
        from sip_train.ensemble.training import train_ensemble

        log.info("ensemble: %d jobs train together: #%s", len(jobs), ", #".join(str(first + i) for i in jobs))
        prepared: list[tuple[DictConfig, DictConfig]] = []

        def capture(task: DictConfig) -> None:
            resolved = OmegaConf.create(OmegaConf.to_container(task, resolve=True))
            prepared.append((resolved, HydraConfig.instance().cfg.copy()))

        job_returns = []
        for i in jobs:
            log.info("\t#%d : %s", first + i, " ".join(filter_overrides(job_overrides[i])))
            job_returns.append(run_job(hydra_context=self.hydra_context, task_function=capture,
                                       config=self._job_config(job_overrides[i], first + i),
                                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        try:
            summaries = train_ensemble(prepared)
        except Exception as error:  # noqa: BLE001 - the sweep goes on; every member records the failure
            log.exception("ensemble failed; its jobs are recorded as failed, the sweep goes on")
            summaries = [None] * len(jobs)
            failure = error
        for i, job_return, summary in zip(jobs, job_returns, summaries):
            if summary is None:
                job_return.status, job_return.return_value = JobStatus.FAILED, failure
            else:
                job_return.status, job_return.return_value = JobStatus.COMPLETED, _return_value(summary)
            returns[i] = job_return


def _return_value(summary: dict[str, Any]) -> float:
    """What train.py returns for a job of a multirun: the primary metric of a completed run, else NaN."""
    value = summary.get(summary.get("primary_metric", "x_l1")) if summary.get("status") == "completed" else None
    return float("nan") if value is None else float(value)
