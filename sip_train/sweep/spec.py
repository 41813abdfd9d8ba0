"""A named sweep (conf/sweep/<name>.yaml) and its expansion into jobs with fixed run directories.

A sweep file is a `_global_` config of the `sweep` group: its defaults list picks the experiment
every job starts from, `sweep:` holds the spec (every key optional except one of `grid` and `list`),
and `hydra.mode: MULTIRUN` makes `python train.py sweep=NAME` a multirun even without `-m`:

    # @package _global_
    # python train.py -m sweep=heat_lr_batch    (or python sweep.py sweep=heat_lr_batch)
    defaults:
      - override /experiment: paper_fig11_heat   # every job runs with experiment=paper_fig11_heat
    sweep:
      grid:                        # a list value is swept (cartesian product), a scalar is fixed
        optimizer: [sip, adam]
        optimizer.lr: [1.0e-2, 1.0e-3, 1.0e-4]
        trainer.max_steps: 3000
      list:                        # more jobs: each entry is a grid of its own; the union of the
        - {optimizer: sgd, optimizer.lr: 2.0e-6}   # entries is crossed with `grid`
      metric: x_l1                 # the summary.json value of the table (lower is better)
      curves: [val/x_l1]           # metrics.csv columns drawn as learning curves (default val/<metric>)
      smooth: 1                    # running mean over this many logged points of each curve
      tail: 0.1                    # add the mean of the last 10% of the validation curve (Fig. 5d)
      plots:
        grid: {rows: optimizer.lr, cols: data.batch_size, x: time}   # curves per panel (Fig. 11/12)
        versus: {x: problem.xi, log_x: true}                          # metric vs parameter (Fig. 5d)
      iterative: {iterations: 1000, gd_lr: 1.0}                       # Fig. 13 baselines
    hydra:
      mode: MULTIRUN

A key whose value is itself a list is swept over a list of lists (`network.hidden: [[64, 64]]`).
A job's name, which is also its run directory under the sweep directory, is `key=value,...` over
its swept keys (those written as lists in `grid`, and every key of a `list` entry): the same sweep
file always maps a job to the same directory, which is how an interrupted sweep resumes.

On the command line (`plan`), a swept key keeps only the jobs with the given values
(`optimizer.lr=1e-3`, `data.batch_size=4,32`: a smoke test of a big sweep), a comma list of another
key is swept on top of the sweep (`seed=0,1`), and any other override goes to every job, replacing
the sweep's fixed value of that key (`trainer.max_steps=20`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from sip_train.resolvers import differences
from sip_train.summary import read_summary

SPEC_KEYS = ("grid", "list", "metric", "curves", "smooth", "tail", "plots", "iterative")
PLAN_FILE = "sweep.yaml"  # the plan of a sweep, written into its directory when it runs
_PLAIN = re.compile(r"^[A-Za-z_][\w.\-/:@]*$")
_MAX_NAME = 200


class SweepError(ValueError):
    """A sweep file, command line or sweep directory that cannot be used as it is."""


@dataclass(frozen=True)
class Job:
    """One run of a sweep: its name (= run directory), swept values and all its task overrides."""

    name: str
    params: dict[str, Any]
    overrides: tuple[str, ...]
    config_hash: str | None = None  # the identity of its composed config (sip_train.resolvers), set by the sweeper


@dataclass
class Sweep:
    """A parsed sweep spec (see the module docstring) and the experiment its jobs start from."""

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

    @classmethod
    def from_spec(cls, name: str, spec: Any, experiment: str | None = None) -> Sweep:
        """A Sweep from the `sweep:` block of a composed config (a DictConfig or a dict).

        Raises:
            SweepError: unknown keys, or neither `grid` nor `list`.
        """
        content = dict(OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec or {})
        unknown = sorted(set(content) - set(SPEC_KEYS))
        if unknown:
            raise SweepError(f"sweep={name}: unknown keys {unknown} under `sweep:`; a sweep has {list(SPEC_KEYS)}")
        content["entries"] = content.pop("list", None)
        sweep = cls(name=name, experiment=experiment, **{key: value for key, value in content.items() if value is not None})
        if not sweep.grid and not sweep.entries:
            raise SweepError(f"sweep={name}: a sweep needs a `grid` or a `list` of overrides")
        sweep.curves = sweep.curves or [f"val/{sweep.metric}"]
        return sweep

    @property
    def swept_keys(self) -> list[str]:
        """Keys that name a job: every key of a `list` entry, then the list-valued keys of `grid`."""
        keys = [key for entry in self.entries for key in entry]
        keys += [key for key, value in self.grid.items() if isinstance(value, list)]
        return list(dict.fromkeys(keys))


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


def override(key: str, value: Any) -> str:
    """One task override `key=value`."""
    return f"{key}={render(value)}"


def override_key(item: str) -> str:
    """The key an override string sets, without its +/~ prefix."""
    return item.split("=", 1)[0].lstrip("+~")


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
    given = {override_key(item) for item in overrides}
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


def plan(sweep: Sweep, arguments: Sequence[str]) -> list[Job]:
    """The jobs of `sweep` under the command line's task overrides (`sweep=...` itself ignored).

    A swept key keeps only the jobs with the given value(s); a comma-separated (or range) sweep of
    another key is swept on top of the sweep, crossed with its jobs; anything else goes to every job.

    Raises:
        SweepError: a value of a swept key that no job has, a non-discrete sweep, or see `expand`.
    """
    keep: dict[str, list[Any]] = {}
    extra: dict[str, list[Any]] = {}
    fixed = []
    for parsed in OverridesParser.create().parse_overrides(list(arguments)):
        key = parsed.key_or_group
        if key == "sweep":
            continue
        if parsed.is_sweep_override() and not parsed.is_discrete_sweep():
            raise SweepError(f"{parsed.input_line}: only lists of values (a,b or range) can be swept here")
        values = list(parsed.sweep_iterator()) if parsed.is_sweep_override() else [parsed.value()]
        if key in sweep.swept_keys:
            keep[key] = values
        elif parsed.is_sweep_override():
            extra[parsed.get_key_element()] = values
        else:
            fixed.append(parsed.input_line)
    jobs = expand(dataclasses.replace(sweep, grid={**sweep.grid, **extra}), fixed)
    for key, values in keep.items():
        jobs = [job for job in jobs if key in job.params and job.params[key] in values]
        if not jobs:
            offered = list(dict.fromkeys(render(job.params.get(key)) for job in expand(sweep) if key in job.params))
            raise SweepError(f"{key}={','.join(render(v) for v in values)} selects no job of sweep {sweep.name}: "
                             f"it sweeps {key} over {offered} (with the other keys given)")
    return jobs


def sweep_directory(name: str, given: str | Path | None = None) -> Path:
    """The absolute directory of sweep `name`: `given` (hydra.sweep.dir), else multirun/<name>."""
    return Path(given if given is not None else Path("multirun") / name).resolve()


def job_state(run_dir: Path, config_hash: str, identity: dict[str, Any], max_steps: int) -> tuple[str, list[str]]:
    """Whether a job's directory holds its finished run, by the run identity its summary.json records:
    ("completed", []) for a completed run (max_steps reached) or a diverged one of this identity; ("changed",
    the differing keys) for a run of another identity (e.g. its experiment file was edited since), which must
    run again afresh; ("to run", []) otherwise (never ran, failed, interrupted or short of max_steps: train.py
    continues it from its checkpoint, which it checks against the identity itself).
    """
    summary = read_summary(run_dir) if (Path(run_dir) / "summary.json").is_file() else {}
    recorded = summary.get("config_hash")
    if recorded is not None and recorded != config_hash:
        return "changed", differences(summary.get("config_identity") or {}, identity)
    reached = max_steps is None or max_steps <= 0 or (summary.get("steps") or 0) >= max_steps
    if recorded is not None and (summary.get("status") == "diverged" or summary.get("status") == "completed" and reached):
        return "completed", []
    return "to run", []


def wandb_settings(config: Any) -> dict[str, Any] | None:
    """project and mode of the W&B logger a composed run config logs to, or None without one."""
    block = config.get("logger", {}).get("wandb")
    return None if block is None else {"project": block.get("project", "sip-train"), "mode": block.get("mode", "auto")}


def save_plan(sweep_dir: Path, sweep: Sweep, jobs: Sequence[Job], wandb: dict[str, Any] | None) -> Path:
    """<sweep_dir>/sweep.yaml: the spec, every job (name, swept values, overrides) and the jobs'
    W&B settings, which is all a report of the sweep directory needs."""
    content = {"sweep": dataclasses.asdict(sweep), "wandb": wandb,
               "jobs": [{"name": job.name, "params": job.params, "overrides": list(job.overrides),
                         "config_hash": job.config_hash} for job in jobs]}
    path = Path(sweep_dir) / PLAN_FILE
    OmegaConf.save(OmegaConf.create(content), path)
    return path


def load_plan(sweep_dir: Path) -> tuple[Sweep, list[Job], dict[str, Any] | None]:
    """(sweep, jobs, W&B settings) of a sweep directory, as `save_plan` wrote them.

    Raises:
        SweepError: the directory holds no sweep plan (the sweep never ran there).
    """
    path = Path(sweep_dir) / PLAN_FILE
    if not path.is_file():
        raise SweepError(f"{path} not found: {sweep_dir} is not the directory of a sweep that ran")
    content = OmegaConf.to_container(OmegaConf.load(path))
    jobs = [Job(job["name"], job["params"], tuple(job["overrides"]), job.get("config_hash")) for job in content["jobs"]]
    return Sweep(**content["sweep"]), jobs, content["wandb"]


def is_finite(value: Any) -> bool:
    """A number that is neither None, NaN nor infinite."""
    return isinstance(value, (int, float)) and math.isfinite(value)
