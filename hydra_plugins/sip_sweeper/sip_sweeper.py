"""The `sip` sweeper: Hydra's basic sweeper, plus named sweeps that resume.

    python train.py -m problem=heat optimizer=adam,sip seed=0,1   # cartesian product, as Hydra's basic sweeper
    python train.py -m sweep=heat_lr_batch hydra/launcher=joblib_1thread   # conf/sweep/heat_lr_batch.yaml

A named sweep (`sweep=NAME`, a config of the `sweep` group) is expanded with the command line by
`sip_train.sweep.spec.plan`; each job runs in <sweep dir>/<job name> (sweep dir: multirun/NAME unless
hydra.sweep.dir is given), jobs that already finished there are skipped, and the plan is saved as
<sweep dir>/sweep.yaml for `sweep.py`'s report. Every launcher runs the jobs, as with `-m` alone.
Its settings are conf/hydra/sweeper/sip.yaml (a file, so every process that composes a job finds
them). When the launcher config sets hydra.job.env_set.OMP_NUM_THREADS, jobs get `threads=N` too (torch
is imported before Hydra sets the variable in a launcher's worker process).
"""

import dataclasses
import itertools
import logging
from pathlib import Path
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sip_train.resolvers import config_identity, identity_hash
from sip_train.sweep.spec import (Job, Sweep, SweepError, job_state, override_key, plan, quote, render, save_plan,
                                  sweep_directory, wandb_settings)

log = logging.getLogger(__name__)


def cartesian(arguments: Sequence[str], parser: OverridesParser) -> list[list[str]]:
    """The override lists of a plain multirun: the cartesian product of the comma lists (and
    ranges, globs), the last value of a key given twice winning, as Hydra's basic sweeper does."""
    choices: dict[str, list[str]] = {}
    for parsed in parser.parse_overrides(list(arguments)):
        key = parsed.get_key_element()
        if parsed.is_sweep_override():
            if not parsed.is_discrete_sweep():
                raise CompactHydraException(
                    f"the sip sweeper does not support sweep type {parsed.value_type.name}: {parsed.input_line}")
            choices[key] = [f"{key}={value}" for value in parsed.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={parsed.get_value_element_as_str()}"]
    return [list(combination) for combination in itertools.product(*choices.values())]


class SipSweeper(Sweeper):
    """Expands a named sweep or a cartesian command line, skips finished jobs of a named sweep,
    and runs the rest in one batch with the configured launcher."""

    def __init__(self, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def _threads(self, arguments: Sequence[str]) -> list[str]:
        """[threads=N] when the launcher sets OMP_NUM_THREADS=N and the command line no threads."""
        threads = self.config.hydra.job.env_set.get("OMP_NUM_THREADS")
        given = any(override_key(item) == "threads" for item in arguments)
        return [f"threads={int(threads)}"] if threads is not None and not given else []

    def sweep(self, arguments: list[str]) -> Any:
        name = self.config.hydra.runtime.choices.get("sweep")
        if name is None:
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            batch = [[*job, *self._threads(arguments)] for job in cartesian(arguments, parser)]
            sweep_dir = Path(self.config.hydra.sweep.dir)
            if self.dry_run:
                print("\n".join(" ".join(job) for job in batch))
                return []
        else:
            sweep_dir, batch = self._named(name, arguments)  # composes every job's config: a bad override stops here
            if self.dry_run or not batch:
                return []
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        if name is None and not getattr(self.launcher, "composes_every_job_first", False):
            self.validate_batch_is_legal(batch)  # a bad override stops the sweep before any job runs
        returns = self.launcher.launch(batch, initial_job_idx=0)
        for job_return in returns:
            _ = job_return.return_value  # re-raises what a job raised, as Hydra's basic sweeper does
        return [returns]

    def _named(self, name: str, arguments: Sequence[str]) -> tuple[Path, list[list[str]]]:
        """(sweep dir, override lists of the jobs to run) of a named sweep; saves its plan."""
        config = self.config
        try:
            sweep = Sweep.from_spec(name, config.get("sweep"), config.hydra.runtime.choices.get("experiment"))
            jobs = plan(sweep, [*arguments, *self._threads(arguments)])
        except SweepError as error:
            raise CompactHydraException(str(error)) from error
        given = any(override_key(item) == "hydra.sweep.dir" for item in config.hydra.overrides.hydra)
        sweep_dir = sweep_directory(name, config.hydra.sweep.dir if given else None)
        config.hydra.sweep.dir = str(sweep_dir)  # where the launcher writes (e.g. submitit's .submitit/)
        states = {}
        for index, job in enumerate(jobs):
            identity, max_steps = self._identity(self._job_overrides(job, sweep_dir))
            jobs[index] = job = dataclasses.replace(job, config_hash=identity_hash(identity))
            states[job.name] = job_state(sweep_dir / job.name, job.config_hash, identity, max_steps)
        pending = [job for job in jobs if states[job.name][0] != "completed"]
        if self.dry_run:
            for job in jobs:
                state, changed = states[job.name]
                print(f"{state:>9}  {job.name}" + (f"  ({'; '.join(changed)})" if changed else ""))
            print(f"sweep directory: {sweep_dir}")
            return sweep_dir, []
        for index, job in enumerate(pending):
            if states[job.name][0] == "changed":  # a fresh run: train.py moves the earlier one aside
                log.warning("%s ran with another configuration (%s): it runs again, its earlier run moved to "
                            "%s/replaced-<date>/", job.name, "; ".join(states[job.name][1]), job.name)
                pending[index] = dataclasses.replace(job, overrides=(*job.overrides, "resume=false"))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        save_plan(sweep_dir, sweep, jobs, wandb_settings(config))
        log.info("sweep %s: %d jobs in %s, %d finished before, %d to run", name, len(jobs), sweep_dir,
                 len(jobs) - len(pending), len(pending))
        return sweep_dir, [self._job_overrides(job, sweep_dir) for job in pending]

    def _identity(self, overrides: list[str]) -> tuple[dict[str, Any], Any]:
        """(run identity, trainer.max_steps) of a job's config, composed as the launcher will compose it."""
        job_config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        before = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(job_config)  # its ${hydra:runtime.choices...} resolve against the job
        try:
            return config_identity(job_config), OmegaConf.select(job_config, "trainer.max_steps",
                                                                 throw_on_resolution_failure=False)
        finally:
            HydraConfig.instance().cfg = before

    def _job_overrides(self, job: Job, sweep_dir: Path) -> list[str]:
        """A job's task overrides, its run directory, and an override_dirname of its swept values
        only (what loggers name the job by); hydra.mode so the job knows it is one of many."""
        excluded = list(self.config.hydra.job.config.override_dirname.exclude_keys)
        excluded += [override_key(item) for item in job.overrides if override_key(item) not in job.params]
        return [*job.overrides, f"hydra.sweep.dir={quote(str(sweep_dir))}", f"hydra.sweep.subdir={quote(job.name)}",
                f"hydra.job.config.override_dirname.exclude_keys={render(list(dict.fromkeys(excluded)))}",
                "hydra.mode=MULTIRUN"]
