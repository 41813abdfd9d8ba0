"""summary.json: what a run did, in one small file next to its checkpoints and metrics."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def write_summary(run_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write `summary` as <run_dir>/summary.json atomically (NaN/inf become null)."""
    clean = {key: None if isinstance(value, float) and not math.isfinite(value) else value
             for key, value in summary.items()}
    path = Path(run_dir) / "summary.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(clean, indent=2, default=str) + "\n")
    os.replace(temporary, path)
    return path


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The summary.json of a run directory."""
    return json.loads((Path(run_dir) / "summary.json").read_text())


def job_value(summary: dict[str, Any]) -> float:
    """What a job of a multirun returns (to sweepers such as Optuna): the primary metric of a completed run, else
    NaN."""
    value = summary.get(summary.get("primary_metric", "x_l1")) if summary.get("status") == "completed" else None
    return float("nan") if value is None else float(value)
