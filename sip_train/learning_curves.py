"""figures/learning_curves.png of a run directory: its validation metrics (left) and training metrics (right)
against steps, drawn from metrics.csv at the end of a run and, while it trains, redrawn by the
`LearningCurves` callback as often as that costs little of the run's time."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

#: metrics.csv columns that are not learning curves.
NOT_CURVES = {"step", "epoch", "val/step"}
#: While training, the figure is redrawn after a validation only once this many seconds have passed since the
#: last drawing, and at least ten times as long as that drawing took: the live figure costs at most ~10 %.
MIN_REDRAW_INTERVAL_S = 30.0

log = logging.getLogger(__name__)


def draw_learning_curves(run_dir: str | Path) -> Path | None:
    """Write <run_dir>/figures/learning_curves.png from <run_dir>/metrics.csv (nothing while it is empty)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from sip_train.report_format import legend_outside, log_scale_if_positive, save

    run_dir = Path(run_dir)
    path = run_dir / "metrics.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return None
    metrics = pd.read_csv(path)
    panels = {prefix: [c for c in metrics.columns if c.startswith(prefix) and c not in NOT_CURVES]
              for prefix in ("val/", "train/")}
    if "step" not in metrics or not any(panels.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    for ax, (prefix, columns) in zip(axes, panels.items()):
        for column in columns:
            points = metrics[["step", column]].dropna().groupby("step", as_index=False).last()
            ax.plot(points["step"], points[column], "o-" if prefix == "val/" else "-", ms=3, lw=1.2, label=column)
        log_scale_if_positive(ax, metrics[columns].stack() if columns else [])
        ax.set_xlabel("training step")
        ax.set_title("validation" if prefix == "val/" else "training", fontsize=10)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes)
    fig.suptitle(f"{run_dir.parent.name}/{run_dir.name}: learning curves")
    (run_dir / "figures").mkdir(exist_ok=True)
    return save(fig, run_dir / "figures" / "learning_curves.png")


class LearningCurves(Callback):
    """Redraws <run dir>/figures/learning_curves.png after a validation (rank zero; not while sanity checking)
    when it is due (see MIN_REDRAW_INTERVAL_S); `draw` draws it at the end of the run, whatever happened."""

    def __init__(self) -> None:
        self.due = time.perf_counter() + MIN_REDRAW_INTERVAL_S

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or time.perf_counter() < self.due:
            return
        self.draw(trainer)

    def draw(self, trainer: Trainer) -> None:
        """Draw it now from the rows logged so far (written to disk first); a failure is logged, never raised:
        the figure must not end or hide the run's own outcome."""
        start = time.perf_counter()
        try:
            for logger in trainer.loggers:
                logger.save()
            draw_learning_curves(trainer.default_root_dir)
        except Exception:  # noqa: BLE001 - see above
            log.exception("could not draw the learning curves of %s", trainer.default_root_dir)
        took = time.perf_counter() - start
        self.due = time.perf_counter() + max(MIN_REDRAW_INTERVAL_S, 10 * took)
