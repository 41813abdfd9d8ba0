"""Aggregate a sweep directory: results.csv, results.md, curves.csv and figures, the Fig. 13
iterative baselines when the sweep asks for them, and one W&B run of the lot when W&B is on."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sip_train.iterative import compare_runs
from sip_train.summary import read_summary
from sip_train.sweep.figures import figures, job_label
from sip_train.sweep.results import collect, write_tables
from sip_train.sweep.spec import Sweep, load_plan
from sip_train.sweep.wandb_upload import log_to_wandb


def iterative_baselines(sweep: Sweep, trained: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """Fig. 13: per-example GD and L-BFGS-B beside the trained networks, on their validation set
    (`sweep.iterative` holds `sip_train.iterative.compare`'s options). Results newer than every
    network are reused."""
    paths = {"csv": out_dir / "iterative.csv", "markdown": out_dir / "iterative.md", "figures": [out_dir / "iterative.png"]}
    if paths["csv"].is_file():
        table = pd.read_csv(paths["csv"])
        made = paths["csv"].stat().st_mtime
        networks = [Path(read_summary(run_dir)["last_checkpoint"]) for run_dir in trained.values()]
        if (set(table["method"]) == {"GD", "L-BFGS-B", *(f"NN {label}" for label in trained)}
                and table["iterations"].max() == sweep.iterative.get("iterations", 1000)
                and all(made > path.stat().st_mtime for path in networks)):
            return {"table": table, **paths}
    return compare_runs(trained, out_dir, **sweep.iterative)


def report(sweep_dir: Path) -> dict[str, Any]:
    """Aggregate every job of the sweep that ran in `sweep_dir` (its sweep.yaml plan).

    Returns:
        {"sweep", "jobs", "table": DataFrame, "csv", "markdown", "curves": paths, "figures": [paths],
         "iterative": paths or None, "wandb_group": the W&B group logged to, or None}
    """
    sweep_dir = Path(sweep_dir)
    sweep, jobs, wandb = load_plan(sweep_dir)
    results, curves = collect(sweep, jobs, sweep_dir)
    tables = write_tables(sweep, results, curves, sweep_dir)
    paths = figures(results, curves, jobs, sweep, sweep_dir)
    trained = {job_label(job.params): sweep_dir / job.name
               for job, status in zip(jobs, results["status"]) if status == "completed"}
    iterative = iterative_baselines(sweep, trained, sweep_dir / "iterative") if sweep.iterative and trained else None
    shown = paths + (iterative["figures"] if iterative else [])
    group = log_to_wandb(sweep_dir, results, shown, wandb) if wandb is not None else None
    return {"sweep": sweep, "jobs": jobs, "table": results, **tables, "figures": paths, "iterative": iterative,
            "wandb_group": group}
