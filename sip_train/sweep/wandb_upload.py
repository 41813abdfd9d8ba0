"""A sweep's aggregate on W&B: one run in the group of the sweep's jobs, holding the results table
(a W&B Table) and the sweep's figures. Its mode follows sip_train.loggers (offline without an account)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import wandb

from sip_train.loggers import resolve_mode, wandb_logger


def log_to_wandb(sweep_dir: Path, results: pd.DataFrame, figures: Sequence[Path], settings: dict[str, Any]) -> str | None:
    """Log the table and figures to the run `<group>-report` of the group the sweep's jobs share
    (named after the sweep directory, as the jobs' groups are); the same run again on a re-report
    (its id is kept in the sweep directory). `settings`: the jobs' logger.wandb project and mode.

    Returns:
        The W&B group, or None when the mode resolves to disabled (nothing logged).
    """
    if resolve_mode(settings.get("mode", "auto")) == "disabled":
        return None
    group = Path(sweep_dir).name
    run = wandb_logger(save_dir=str(sweep_dir), name=f"{group}-report", group=group,
                       tags=["sweep-report"], **settings).experiment
    try:
        run.log({f"sweep/{path.stem}": wandb.Image(str(path)) for path in figures}
                | {"sweep/results": wandb.Table(dataframe=results.astype(str))})
    finally:
        wandb.finish()
    return group
