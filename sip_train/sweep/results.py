"""A sweep's results read from its job directories: one table row per job from its summary.json
(status, exit code, final metrics, times) and its learning curves from metrics.csv.

A curve's wall-clock axis is the training time: the cumulative logged step time (time/step_ms),
which leaves validation out, like the paper's curves.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from sip_train.report_format import markdown
from sip_train.summary import read_summary
from sip_train.sweep.spec import Job, Sweep, is_finite, render

STEP_TIME = "time/step_ms"
CURVE_COLUMNS = ["curve", "step", "time_s", "value"]


def outcome(summary: dict[str, Any] | None, metric: str) -> str:
    """completed | diverged (completed, final metric NaN/inf) | failed | interrupted | missing | stale (a run of
    another configuration than the job's now, see `collect`)."""
    if summary is None:
        return "missing"
    status = str(summary.get("status", "missing"))
    if status == "completed":
        return "completed" if is_finite(summary.get(metric)) else "diverged"
    return "failed" if status.startswith("failed") else status


def training_seconds(metrics: pd.DataFrame, fallback_ms: float | None) -> Callable[[np.ndarray], np.ndarray]:
    """Training wall-clock [s] at given steps: each logged step time stands for the steps since
    the previous log; past the last log it goes on at the last rate. Without logged step times:
    steps x `fallback_ms` (the run's median step time)."""
    timed = (metrics[["step", STEP_TIME]].dropna().groupby("step")[STEP_TIME].last()
             if STEP_TIME in metrics else pd.Series(dtype=float))
    if timed.empty:
        rate = fallback_ms if fallback_ms is not None else math.nan
        return lambda steps: np.asarray(steps, dtype=float) * rate / 1000
    steps, rates = timed.index.to_numpy(float), timed.to_numpy(float)
    elapsed = np.cumsum(np.diff(steps, prepend=0.0) * rates) / 1000

    def seconds(query: np.ndarray) -> np.ndarray:
        query = np.asarray(query, dtype=float)
        inside = np.interp(query, np.r_[0.0, steps], np.r_[0.0, elapsed])
        return np.where(query > steps[-1], elapsed[-1] + (query - steps[-1]) * rates[-1] / 1000, inside)

    return seconds


def read_curves(run_dir: Path, columns: Sequence[str], fallback_ms: float | None) -> pd.DataFrame:
    """The learning curves of one run, long format: curve, step, time_s, value."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return pd.DataFrame(columns=CURVE_COLUMNS)
    metrics = pd.read_csv(path)
    seconds = training_seconds(metrics, fallback_ms)
    frames = []
    for column in columns:
        if column not in metrics:
            continue
        points = metrics[["step", column]].dropna().groupby("step", as_index=False).last()
        frames.append(pd.DataFrame({
            "curve": column, "step": points["step"], "time_s": seconds(points["step"]),
            "value": points[column],
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def job_row(sweep: Sweep, job: Job, summary: dict[str, Any] | None, curves: pd.DataFrame) -> dict[str, Any]:
    """One table row: swept values, outcome, exit code, steps, final/best(/tail) metric, times, error."""
    summary = summary or {}
    metric = sweep.metric
    validation = curves.loc[curves["curve"] == f"val/{metric}", "value"].dropna()
    validation = validation[np.isfinite(validation.to_numpy(float))]
    row = {key: render(value) if isinstance(value, (list, dict)) else value for key, value in job.params.items()}
    row.update(status=outcome(summary or None, metric), exit_code=summary.get("exit_code"),
               steps=summary.get("steps"), **{metric: summary.get(metric)})
    row[f"best_{metric}"] = validation.min() if len(validation) else None
    if sweep.tail:
        row[f"tail_{metric}"] = validation.tail(max(1, math.ceil(sweep.tail * len(validation)))).mean() if len(validation) else None
    row.update(wall_time_s=summary.get("wall_time_s"), step_ms=summary.get("step_time_ms_median"),
               error=summary["status"].removeprefix("failed: ") if row["status"] == "failed" else None,
               run_dir=job.name)
    return row


def collect(sweep: Sweep, jobs: Sequence[Job], sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results: one row per job, curves: long format with a `job` column) of a sweep directory. A job whose
    summary.json records another run identity than the plan's (its configuration changed since it ran) is
    listed as stale, without metrics or curves."""
    rows, curves = [], []
    for job in jobs:
        run_dir = Path(sweep_dir) / job.name
        summary = read_summary(run_dir) if (run_dir / "summary.json").is_file() else None
        stale = summary is not None and None not in (job.config_hash, summary.get("config_hash")) \
            and summary["config_hash"] != job.config_hash
        if stale:  # not this job's result: none of it is shown
            summary, job_curves = {"status": "stale"}, pd.DataFrame(columns=CURVE_COLUMNS)
        else:
            job_curves = read_curves(run_dir, list(dict.fromkeys([*sweep.curves, f"val/{sweep.metric}"])),
                                     (summary or {}).get("step_time_ms_median"))
        rows.append(job_row(sweep, job, summary, job_curves))
        curves.append(job_curves.assign(job=job.name))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def write_tables(sweep: Sweep, results: pd.DataFrame, curves: pd.DataFrame, sweep_dir: Path) -> dict[str, Path]:
    """results.csv, results.md and curves.csv in the sweep directory."""
    sweep_dir = Path(sweep_dir)
    results.to_csv(sweep_dir / "results.csv", index=False)
    (sweep_dir / "results.md").write_text(f"# sweep {sweep.name}\n\n" + markdown(results))
    curves.to_csv(sweep_dir / "curves.csv", index=False)
    return {"csv": sweep_dir / "results.csv", "markdown": sweep_dir / "results.md", "curves": sweep_dir / "curves.csv"}
