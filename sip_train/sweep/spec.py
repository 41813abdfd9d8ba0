"""A named sweep (conf/sweep/<name>.yaml) and its expansion into jobs with fixed run directories.

A sweep file (every key optional except one of `grid` and `list`):

    # python sweep.py sweep=heat_lr_batch
    experiment: paper_fig11_heat   # every job starts from this experiment config
    grid:                          # a list value is swept (cartesian product), a scalar is fixed
      optimizer: [sip, adam]
      optimizer.lr: [1.0e-2, 1.0e-3, 1.0e-4]
      trainer.max_steps: 3000
    list:                          # more jobs: each entry is a grid of its own; the union of the
      - {optimizer: sgd, optimizer.lr: 2.0e-6}   # entries is crossed with `grid`
    metric: x_l1                   # the summary.json value of the table (lower is better)
    curves: [val/x_l1]             # metrics.csv columns drawn as learning curves (default val/<metric>)
    smooth: 1                      # running mean over this many logged points of each curve
    tail: 0.1                      # add the mean of the last 10% of the validation curve (Fig. 5d)
    plots:
      grid: {rows: optimizer.lr, cols: data.batch_size, x: time}   # curves per panel (Fig. 11/12)
      versus: {x: problem.xi, log_x: true}                          # metric vs parameter (Fig. 5d)
    iterative: {iterations: 1000, gd_lr: 1.0}                       # Fig. 13 baselines

A key whose value is itself a list is swept over a list of lists (`network.hidden: [[64, 64]]`).
A job's name, which is also its run directory under the sweep directory, is `key=value,...` over
its swept keys (those written as lists in `grid`, and every key of a `list` entry): the same sweep
file always maps a job to the same directory, which is how an interrupted sweep resumes.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from sip_train.config import CONF
from sip_train.checkpoints import newest_checkpoint
from sip_train.summary import read_summary

SPEC_KEYS = ("experiment", "grid", "list", "metric", "curves", "smooth", "tail", "plots", "iterative")
#: Override keys (and key prefixes) that change how a job runs or logs, not its result: a completed
#: job still counts as done when only these differ.
RUNTIME_KEYS = ("threads", "logger", "trainer.enable_progress_bar", "trainer.accelerator", "trainer.devices")
FINISHED = ("completed", "diverged")  # summary.json statuses of jobs that are not run again
_PLAIN = re.compile(r"^[A-Za-z_][\w.\-/:@]*$")
_MAX_NAME = 200


class SweepError(ValueError):
    """A sweep file or a sweep directory that cannot be used as it is."""


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its name (= run directory), swept values and all its task overrides."""

    name: str
    params: dict[str, Any]
    overrides: tuple[str, ...]


@dataclass
class Sweep:
    """A parsed sweep file; see the module docstring for the meaning of each field."""

    name: str
    experiment: str | None = None
    grid: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)  # the file's `list`
    metric: str = "x_l1"
    curves: list[str] = field(default_factory=list)
    smooth: int = 1
    tail: float | None = None
    plots: dict[str, dict[str, Any]] = field(default_factory=dict)
    iterative: dict[str, Any] | None = None

    @property
    def swept_keys(self) -> list[str]:
        """Keys that name a job: every key of a `list` entry, then the list-valued keys of `grid`."""
        keys = [key for entry in self.entries for key in entry]
        keys += [key for key, value in self.grid.items() if isinstance(value, list)]
        return list(dict.fromkeys(keys))


def load_sweep(name_or_path: str) -> Sweep:
    """Read conf/sweep/<name>.yaml (or a YAML file path) into a Sweep, checking its keys."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONF / "sweep" / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
        raise SweepError(f"sweep={name_or_path!r} not found: choose one of {known} or give a YAML file path")
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    unknown = sorted(set(content) - set(SPEC_KEYS))
    if unknown:
        raise SweepError(f"{path}: unknown keys {unknown}; a sweep file has {list(SPEC_KEYS)}")
    content["entries"] = content.pop("list", None)
    sweep = Sweep(name=path.stem, **{key: value for key, value in content.items() if value is not None})
    if not sweep.grid and not sweep.entries:
        raise SweepError(f"{path}: a sweep needs a `grid` or a `list` of overrides")
    sweep.curves = sweep.curves or [f"val/{sweep.metric}"]
    return sweep


def render(value: Any) -> str:
    """A value in Hydra's override grammar: 0.001, sip, [32,64,32], 'a b', null, true."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{key}:{render(item)}" for key, item in value.items()) + "}"
    text = str(value)
    if _PLAIN.match(text) and text not in ("null", "true", "false", "inf", "nan"):
        return text
    return quote(text)


def quote(text: str) -> str:
    """A string as one quoted override value, whatever it contains (',', '=', spaces)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def experiment_key() -> str:
    """`experiment` once conf/config.yaml has an experiment slot in its defaults, else `+experiment`."""
    defaults = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml")).get("defaults", [])
    groups = {str(next(iter(entry))).split()[-1] for entry in defaults if isinstance(entry, dict)}
    return "experiment" if "experiment" in groups else "+experiment"


def override(key: str, value: Any) -> str:
    """One task override `key=value` (an experiment choice gets the key config.yaml needs)."""
    return f"{experiment_key() if key == 'experiment' else key}={render(value)}"


def _combinations(block: dict[str, Any]) -> list[dict[str, Any]]:
    """The cartesian product of a block's values (a list is swept, a scalar is one value)."""
    axes = {key: value if isinstance(value, list) else [value] for key, value in block.items()}
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def job_name(params: dict[str, Any]) -> str:
    """`key=value,...` usable as a directory name (over-long names keep a hash of the rest)."""
    name = ",".join(f"{key}={render(value)}" for key, value in params.items()).replace("/", "_") or "default"
    if len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 9]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return name


def expand(sweep: Sweep, overrides: Sequence[str] = ()) -> list[Job]:
    """All jobs of a sweep; `overrides` (Hydra syntax) go to every job, replacing the sweep's
    fixed value of the same key.

    Raises:
        SweepError: a key in both `grid` and a `list` entry, an override of a swept key, or two
            jobs with the same name.
    """
    in_grid = set(sweep.grid) & {key for entry in sweep.entries for key in entry}
    if in_grid:
        raise SweepError(f"sweep {sweep.name}: keys {sorted(in_grid)} are both in `grid` and in `list`")
    given = {item.split("=", 1)[0].lstrip("+~") for item in overrides}
    overridden = given & set(sweep.swept_keys)
    if overridden:
        raise SweepError(f"sweep {sweep.name} sweeps {sorted(overridden)}: do not override them")
    fixed = [override("experiment", sweep.experiment)] if sweep.experiment and "experiment" not in given else []
    keys = sweep.swept_keys
    jobs = []
    for entry in sweep.entries or [{}]:
        for listed in _combinations(entry):
            for gridded in _combinations(sweep.grid):
                values = {**listed, **gridded}
                params = {key: values[key] for key in keys if key in values}
                task = [*fixed, *(override(key, value) for key, value in values.items() if key not in given), *overrides]
                jobs.append(Job(job_name(params), params, tuple(task)))
    names = [job.name for job in jobs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise SweepError(f"sweep {sweep.name}: jobs listed more than once: {duplicates}")
    return jobs


def _result_overrides(overrides: Sequence[str]) -> list[str]:
    """The overrides that determine a job's result (runtime-only ones dropped, `+` ignored), sorted."""
    return sorted(item.lstrip("+") for item in overrides
                  if not item.lstrip("+~").split("=", 1)[0].startswith(RUNTIME_KEYS))


def is_completed(job: Job, sweep_dir: Path) -> bool:
    """Whether <sweep_dir>/<job> holds a finished run of this job: completed or diverged (both are
    results; a failed, interrupted or missing run is run again, continuing from its checkpoint).

    Raises:
        SweepError: the directory holds a result or a checkpoint of other overrides (e.g. the same
            sweep with another trainer.max_steps): reusing it would mix two experiments.
    """
    run_dir = Path(sweep_dir) / job.name
    status = read_summary(run_dir).get("status") if (run_dir / "summary.json").is_file() else None
    finished = status in FINISHED
    recorded = run_dir / ".hydra" / "overrides.yaml"
    if (finished or newest_checkpoint(run_dir) is not None) and recorded.is_file():
        before = _result_overrides(OmegaConf.to_container(OmegaConf.load(recorded)))
        now = _result_overrides(job.overrides)
        if before != now:
            raise SweepError(
                f"{run_dir} holds a run with other overrides ({sorted(set(before) ^ set(now))}): "
                "run this sweep in a new directory (hydra.sweep.dir=...) or delete that one"
            )
    return finished


def is_finite(value: Any) -> bool:
    """A number that is neither None, NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)
