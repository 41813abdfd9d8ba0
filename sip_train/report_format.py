"""How result tables and figures look, shared by every report (sweeps, iterative baselines): one
Markdown table style and log axes labelled with plain numbers. A leaf module: imports no sip_train."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

DPI = 100
#: Below this max/min ratio a log axis would show no labelled tick: the axis stays linear.
MIN_LOG_SPAN = 3.0
PLAIN = FuncFormatter(lambda value, _: f"{value:.4g}")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:80]


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table (numbers to 4 significant digits; run_dir left out, error only if any)."""
    columns = [c for c in frame.columns if c != "run_dir" and (c != "error" or frame[c].notna().any())]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines) + "\n"


def log_scale_if_positive(ax: Axes, values: pd.Series | Sequence[float], axis: str = "y") -> None:
    """A log `axis` (the paper's) when every value is positive and they span a factor of 3 or more.

    Major ticks at 1, 2 and 5 times powers of ten (1 to 9 for less than a decade) labelled as plain
    numbers; minor ticks unlabelled, so no value is labelled twice.
    """
    values = pd.to_numeric(pd.Series(values), errors="coerce").dropna()
    if not len(values) or values.min() <= 0 or values.max() / values.min() < MIN_LOG_SPAN:
        return
    getattr(ax, f"set_{axis}scale")("log")
    span = values.max() / values.min()
    subs = (1.0,) if span > 1e4 else (1.0, 2.0, 5.0) if span > 7 else tuple(range(1, 10))
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=subs))
    target.set_major_formatter(PLAIN)
    target.set_minor_formatter(NullFormatter())


def ticks_at(ax: Axes, values: Sequence[float], log: bool = False) -> None:
    """The x axis ticked exactly at `values` (a swept parameter's), labelled as plain numbers."""
    if log:
        ax.set_xscale("log")
    ax.set_xticks(sorted(values))
    ax.xaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_minor_locator(NullLocator())


def legend_outside(fig: Figure, axes: Sequence[Axes], loc: str = "outside right upper") -> None:
    """One legend for the figure, outside every panel (constrained layout makes room), without
    repeats (lines of the same label share one entry)."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        below = loc.startswith("outside lower")
        columns = max(1, min(4, 150 // max(len(label) for label in entries))) if below else 1
        fig.legend(entries.values(), entries.keys(), loc=loc, ncol=columns, fontsize=8)


def save(fig: Figure, path: Path) -> Path:
    """Write a figure as PNG and free it."""
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
