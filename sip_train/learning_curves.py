"""figures/learning_curves.png of a run directory: its validation metrics (left) and training metrics (right)
against steps, drawn from metrics.csv and redrawn at each validation by the `LearningCurves` callback."""
from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

#: metrics.csv columns that are not learning curves.
NOT_CURVES = {"step", "epoch", "val/step"}


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
    """Redraws <run dir>/figures/learning_curves.png after each validation (rank zero; not while sanity checking)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:  # the rows logged so far onto disk
            logger.save()
        draw_learning_curves(trainer.default_root_dir)
