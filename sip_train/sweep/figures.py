"""A sweep's figures: learning curves of every job against steps and wall-clock (Fig. 6), a grid
of curves over two swept keys (Fig. 11/12) and the final metric against a swept key (Fig. 5d).
Every figure is titled, legends sit outside the panels, swept-key axes are ticked at the swept values.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from sip_train.report_format import legend_outside, log_scale_if_positive, save, ticks_at
from sip_train.sweep.spec import Job, Sweep, render

X_AXES = {"step": "training step", "time_s": "training wall-clock [s]"}
#: Title characters per inch of figure width at the title's size (12 pt), with a margin.
TITLE_CHARS_PER_INCH = 9
TITLE_POINTS = 12.0


def set_title(fig: Figure, text: str) -> None:
    """The figure's title, wrapped to its width (and smaller where one word is wider) so that no end is
    clipped, however narrow the figure."""
    width = max(1, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH))
    lines = textwrap.wrap(text, width=width, break_long_words=False, break_on_hyphens=False)
    longest = max(map(len, lines), default=1)
    fig.suptitle("\n".join(lines), fontsize=TITLE_POINTS * min(1.0, width / longest))


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def job_label(params: dict[str, Any], exclude: Sequence[str] = (), hue: Sequence[str] | None = None) -> str:
    """A legend entry from swept values: the `hue` keys, or all but `exclude` (short key names;
    seeds share one label)."""
    keys = hue if hue is not None else [key for key in params if key not in exclude and key != "seed"]
    return ", ".join(f"{_short(key)}={render(params[key])}" for key in keys if key in params) or "run"


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per label: the default cycle, tab20 up to 20 labels, viridis beyond."""
    unique = list(dict.fromkeys(labels))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(unique) > len(cycle):
        cycle = plt.get_cmap("tab20").colors if len(unique) <= 20 else plt.get_cmap("viridis")(np.linspace(0, 1, len(unique)))
    return {label: cycle[i] for i, label in enumerate(unique)}


def _draw(ax: Axes, curves: pd.DataFrame, jobs: Sequence[Job], x: str, labels: dict[str, str],
          colours: dict[str, Any], smooth: int) -> None:
    """One line per job and curve column (running mean over `smooth` logged points): colour by
    the job's label, line style by curve column."""
    styles = {curve: style for curve, style in zip(dict.fromkeys(curves["curve"]), ["-", "--", ":", "-."] * 4)}
    for job in jobs:
        label = labels[job.name]
        for curve, points in curves[curves["job"] == job.name].groupby("curve", sort=False):
            ax.plot(points[x], points["value"].rolling(smooth, min_periods=1).mean(), styles[curve],
                    color=colours[label], lw=1.2, label=label if len(styles) == 1 else f"{label} ({curve})",
                    marker="o" if len(points) == 1 else None, ms=4)  # a lone point (e.g. diverged at once): a dot
    ax.grid(alpha=0.3)


def learning_curves(curves: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, title: str | None = None) -> Figure:
    """Every job's curves against steps (left) and training wall-clock (right): Fig. 6 style."""
    labels = {job.name: job_label(job.params) for job in jobs}
    colours = _colours(list(labels.values()))
    fig, axes = plt.subplots(len(sweep.curves), 2, figsize=(11, 3.6 * len(sweep.curves)), squeeze=False,
                             layout="constrained")
    for row, curve in enumerate(sweep.curves):
        for col, x in enumerate(X_AXES):
            ax = axes[row, col]
            _draw(ax, curves[curves["curve"] == curve], jobs, x, labels, colours, sweep.smooth)
            log_scale_if_positive(ax, curves.loc[curves["curve"] == curve, "value"])
            ax.set_xlabel(X_AXES[x])
            ax.set_ylabel(curve)
    legend_outside(fig, axes.flat, loc="outside lower center")
    set_title(fig, title or f"sweep {sweep.name}: learning curves")
    return fig


def _sorted_values(jobs: Sequence[Job], key: str) -> list[Any]:
    values = list(dict.fromkeys(render(job.params.get(key)) for job in jobs if key in job.params))
    try:
        return sorted(values, key=float)
    except ValueError:
        return values


def curve_grid(curves: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, rows: str, cols: str, x: str = "step",
               hue: Sequence[str] | None = None) -> Figure:
    """A panel per (rows value, cols value), a line per setting of the other swept keys (or of
    the `hue` keys): Fig. 11/12 style. `x` is step or time."""
    x = "time_s" if x == "time" else x
    row_values, col_values = _sorted_values(jobs, rows), _sorted_values(jobs, cols)
    labels = {job.name: job_label(job.params, (rows, cols), hue) for job in jobs}
    colours = _colours(list(labels.values()))
    fig, axes = plt.subplots(len(row_values), len(col_values), figsize=(3.4 * len(col_values), 2.8 * len(row_values)),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    for i, row_value in enumerate(row_values):
        for j, col_value in enumerate(col_values):
            ax = axes[i, j]
            panel = [job for job in jobs if render(job.params.get(rows)) == row_value
                     and render(job.params.get(cols)) == col_value]
            shown = curves["job"].isin([job.name for job in panel]) & curves["curve"].isin(sweep.curves)
            _draw(ax, curves[shown], panel, x, labels, colours, sweep.smooth)
            ax.set_title(f"{_short(rows)}={row_value}, {_short(cols)}={col_value}", fontsize=9)
            if i == len(row_values) - 1:
                ax.set_xlabel(X_AXES[x])
            if j == 0:
                ax.set_ylabel(", ".join(sweep.curves))
    for ax in axes.flat:  # one y scale for the panels that share it
        log_scale_if_positive(ax, curves.loc[curves["curve"].isin(sweep.curves), "value"])
    legend_outside(fig, axes.flat, loc="outside lower center")
    set_title(fig, f"sweep {sweep.name}: {', '.join(sweep.curves)} per {_short(rows)} and {_short(cols)}")
    return fig


def versus(results: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, x: str, log_x: bool = False,
           hue: Sequence[str] | None = None) -> Figure:
    """The final metric (the tail mean if `tail` is set; mean over seeds) against one swept key,
    a line per setting of the other swept keys (or of the `hue` keys): Fig. 5d style. The x axis
    is ticked at the swept values."""
    y = f"tail_{sweep.metric}" if sweep.tail else sweep.metric
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    labels = {job.name: job_label(job.params, (x,), hue) for job in jobs}
    data = results.assign(label=results["run_dir"].map(labels), x=pd.to_numeric(results[x], errors="coerce"),
                          y=pd.to_numeric(results[y], errors="coerce"))
    colours = _colours(list(labels.values()))
    for label, points in data.groupby("label", sort=False):
        mean = points.groupby("x")["y"].mean()
        ax.plot(mean.index, mean.to_numpy(), "o-", color=colours[label], label=label)
    ticks_at(ax, data["x"].dropna().unique(), log=log_x)
    log_scale_if_positive(ax, data["y"])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"sweep {sweep.name}: {y} against {_short(x)}")
    ax.grid(alpha=0.3)
    legend_outside(fig, [ax])
    return fig


def figures(results: pd.DataFrame, curves: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, sweep_dir: Path) -> list[Path]:
    """learning_curves.png always; curve_grid.png and versus.png when the sweep's `plots` ask."""
    sweep_dir = Path(sweep_dir)
    paths = [save(learning_curves(curves, jobs, sweep), sweep_dir / "learning_curves.png")]
    if "grid" in sweep.plots:
        paths.append(save(curve_grid(curves, jobs, sweep, **sweep.plots["grid"]), sweep_dir / "curve_grid.png"))
    if "versus" in sweep.plots:
        paths.append(save(versus(results, jobs, sweep, **sweep.plots["versus"]), sweep_dir / "versus.png"))
    return paths
