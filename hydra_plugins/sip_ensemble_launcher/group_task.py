"""The task function the ensemble launcher gives its inner launcher: a group's job trains the group's members as
one ensemble, any other job is the multirun's own task. It travels with the sweep's config and Hydra context
(joblib and submitit pickle it into other processes)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, run_job
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def job_directory(hydra: DictConfig) -> str:
    """A job's directory as its Hydra config names it (sweep dir / subdir): the key of the group it leads."""
    return str(Path(str(hydra.sweep.dir), str(hydra.sweep.subdir)))


class GroupTask:
    """Runs one job of the inner launcher: the group led by the job's directory (`groups`: directory of its
    first member -> the full config of each member, as the launcher composed it) as one
    ensemble, or, for a job of its own, `task_function`. A group's job returns its members' JobReturns."""

    def __init__(self, task_function: TaskFunction, hydra_context: HydraContext,
                 groups: dict[str, list[DictConfig]], command: str) -> None:
        self.task_function, self.hydra_context = task_function, hydra_context
        self.groups, self.command = groups, command

    def __call__(self, cfg: DictConfig) -> Any:
        members = self.groups.get(job_directory(HydraConfig.get()))
        return self.task_function(cfg) if members is None else self.train(members)

    def train(self, members: list[DictConfig]) -> list[JobReturn]:
        """Hydra sets up each member (its directory, log file) as a job of its own, then all train together."""
        from sip_train.ensemble.training import train_ensemble
        from sip_train.summary import job_value

        prepared: list[tuple[DictConfig, DictConfig]] = []

        def capture(task: DictConfig) -> None:
            resolved = OmegaConf.create(OmegaConf.to_container(task, resolve=True))
            prepared.append((resolved, HydraConfig.instance().cfg.copy()))

        returns, training = [], []
        for config in members:
            job_return = run_job(hydra_context=self.hydra_context, task_function=capture, config=config,
                                 job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            returns.append(job_return)
            if job_return.status == JobStatus.COMPLETED:
                training.append(job_return)
        try:
            summaries = train_ensemble(prepared, self.command)
        except Exception as error:  # noqa: BLE001 - the sweep goes on; every member records the failure
            log.exception("ensemble failed; its jobs are recorded as failed, the sweep goes on")
            summaries = [error] * len(training)
        for job_return, summary in zip(training, summaries):
            if isinstance(summary, Exception):
                job_return.status, job_return.return_value = JobStatus.FAILED, summary
            else:
                job_return.return_value = job_value(summary)
        return returns

