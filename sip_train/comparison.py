"""Compare finished runs: run directories, multirun directories and sweep directories become one table row
per configuration (mean, std and count over the seeds of configurations that differ only by seed: final and
best primary metric, steps, median step time) as comparison.md and comparison.csv (comparison_runs.csv: one
row per run), and comparison.png: every run's validation curve against steps and training wall-clock.

A run's configuration is what its command line set (.hydra/overrides.yaml) beside its problem and rule; the
table shows the keys whose values differ between the runs. Reading and drawing are the named sweeps' own
(sip_train.sweep.results, sip_train.sweep.figures).
"""
from __future__ import annotations

import collections
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from sip_train.summary import read_summary

#: summary.json fields that stand for a key a run's command line did not set.
SUMMARY_KEYS = {"problem": "problem", "optimizer": "optimizer", "network": "network", "seed": "seed",
                "optimizer.lr": "lr", "data.batch_size": "batch_size"}


class ComparisonError(ValueError):
    """Nothing to compare: a directory that does not exist or holds no run."""


def find_runs(dirs: Sequence[str | Path]) -> list[Path]:
    """The run directories (those with a summary.json) in or under each directory, evaluations left out."""
    runs: list[Path] = []
    for given in map(Path, dirs):
        if not given.is_dir():
            raise ComparisonError(f"{given}: no such directory")
        found = [given] if (given / "summary.json").is_file() else sorted(
            path.parent for path in given.rglob("summary.json") if "eval" not in path.relative_to(given).parts[:-1])
        if not found:
            raise ComparisonError(f"{given}: no run directory (with a summary.json) in it")
        runs += [path.resolve() for path in found]
    return list(dict.fromkeys(runs))


def _command_line(run_dir: Path) -> dict[str, str]:
    """key -> value of the overrides a run was started with (Hydra's own keys left out)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    pairs = (str(item).lstrip("+~").split("=", 1) for item in overrides or [])
    return {key: value for key, value in (pair for pair in pairs if len(pair) == 2)
            if not key.startswith(("hydra.", "hydra/"))}


def _setting(run_dir: Path, summary: dict[str, Any], command_line: dict[str, str], key: str) -> str:
    """A run's value of `key`: from its command line, else its summary.json, else its saved config."""
    if key in command_line:
        return command_line[key]
    if key in SUMMARY_KEYS and summary.get(SUMMARY_KEYS[key]) is not None:
        return str(summary[SUMMARY_KEYS[key]])
    path = run_dir / ".hydra" / "config.yaml"
    value = OmegaConf.select(OmegaConf.load(path), key, default=None, throw_on_resolution_failure=False) \
        if path.is_file() else None
    return "default" if value is None else str(value)


def run_settings(runs: Sequence[Path]) -> dict[Path, dict[str, str]]:
    """Each run's values of the keys that differ between the runs (problem and rule too if only the seed does)."""
    summaries = {run: read_summary(run) for run in runs}
    command_lines = {run: _command_line(run) for run in runs}
    keys = list(dict.fromkeys(["problem", "optimizer", *(k for line in command_lines.values() for k in line)]))
    values = {run: {key: _setting(run, summaries[run], command_lines[run], key) for key in keys} for run in runs}
    differing = [key for key in keys if len({values[run][key] for run in runs}) > 1]
    if set(differing) <= {"seed"}:  # one configuration: name it by its problem and rule
        differing = ["problem", "optimizer", *differing]
    return {run: {key: values[run][key] for key in differing} for run in runs}


def _value(text: str, parser: Any) -> Any:
    """The value an override's text stands for (`0.001` -> 0.001), by Hydra's `OverridesParser`, so that a legend
    shows it as typed, not as the quoted string `'0.001'`; text that is no override value stays text."""
    try:
        return parser.parse_override(f"key={text}").value()
    except Exception:  # noqa: BLE001 - e.g. "default" for a key a run did not set: shown as it is
        return text


def _primary_metric(runs: Sequence[Path]) -> str:
    counts = collections.Counter(read_summary(run).get("primary_metric", "x_l1") for run in runs)
    return counts.most_common(1)[0][0]


def aggregate(results: Any, keys: Sequence[str], metric: str) -> Any:
    """One row per configuration (the `keys` but seed): mean, std and count over its runs."""
    import pandas as pd

    config = [key for key in keys if key != "seed"]
    rows = []
    for values, group in (results.groupby(config, sort=False, dropna=False) if config else [((), results)]):
        values = values if isinstance(values, tuple) else (values,)
        final, best = (pd.to_numeric(group[column], errors="coerce") for column in (metric, f"best_{metric}"))
        rows.append({**dict(zip(config, values)), "runs": len(group),
                     "completed": int((group["status"] == "completed").sum()),
                     "seeds": ",".join(map(str, group["seed"])) if "seed" in group else "",
                     f"{metric}_mean": final.mean(), f"{metric}_std": final.std(), f"best_{metric}_mean": best.mean(),
                     f"best_{metric}_std": best.std(), "steps": pd.to_numeric(group["steps"], errors="coerce").mean(),
                     "step_ms_median": pd.to_numeric(group["step_ms"], errors="coerce").median(),
                     "wall_time_s": pd.to_numeric(group["wall_time_s"], errors="coerce").mean()})
    return pd.DataFrame(rows)


def compare(dirs: Sequence[str | Path], out_dir: str | Path | None = None, metric: str | None = None,
            title: str | None = None) -> dict[str, Any]:
    """Compare the runs in `dirs`; writes comparison.md, comparison.csv, comparison_runs.csv and comparison.png
    into `out_dir` (default: the one directory given, else the working directory).

    Returns:
        {"table": one row per configuration, "runs": one row per run (DataFrames), "markdown", "csv",
         "runs_csv", "figure": paths, "out_dir"}
    Raises:
        ComparisonError: a directory that does not exist or holds no run.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sip_train.report_format import markdown, save
    from sip_train.sweep.figures import learning_curves
    from sip_train.sweep.results import collect
    from sip_train.sweep.spec import Job, Sweep

    runs = find_runs(dirs)
    out = Path(out_dir if out_dir is not None else dirs[0] if len(dirs) == 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    settings = run_settings(runs)
    metric = metric or _primary_metric(runs)
    title = title or f"{len(runs)} runs in {', '.join(str(d) for d in dirs)}"
    sweep = Sweep(name=title, metric=metric, curves=[f"val/{metric}"])
    jobs = [Job(str(run), settings[run], ()) for run in runs]
    results, curves = collect(sweep, jobs, Path("/"))
    table = aggregate(results, list(next(iter(settings.values()))), metric)
    paths = {"markdown": out / "comparison.md", "csv": out / "comparison.csv", "runs_csv": out / "comparison_runs.csv"}
    table.to_csv(paths["csv"], index=False)
    results.to_csv(paths["runs_csv"], index=False)
    paths["markdown"].write_text(f"# {title}\n\nval {metric}: final and best, mean and std over seeds\n\n"
                                 + markdown(table))
    parser = OverridesParser.create()
    labelled = [Job(job.name, {key: _value(text, parser) for key, text in job.params.items()}, ()) for job in jobs]
    figure = save(learning_curves(curves, labelled, sweep, title=f"{title}: learning curves"), out / "comparison.png")
    return {"table": table, "runs": results, **paths, "figure": figure, "out_dir": out}
