"""A sweep's results: results.csv, results.md, curves.csv and PNG figures in the sweep directory.

Each job contributes its summary.json (status, final metrics, times) and its metrics.csv
(learning curves). A curve's wall-clock axis is the training time: the cumulative logged step
time (time/step_ms), which leaves validation out, like the paper's curves.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from sip_train.summary import read_summary  # noqa: E402
from sip_train.sweep.spec import Job, Sweep, is_finite, render  # noqa: E402

DPI = 100
STEP_TIME = "time/step_ms"
X_AXES = {"step": "training step", "time_s": "training wall-clock [s]"}


def outcome(summary: dict[str, Any] | None, metric: str) -> str:
    """completed | diverged (completed, final metric NaN/inf) | failed | interrupted | missing."""
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
        return pd.DataFrame(columns=["curve", "step", "time_s", "value"])
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
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["curve", "step", "time_s", "value"])


def _summary(run_dir: Path) -> dict[str, Any] | None:
    return read_summary(run_dir) if (run_dir / "summary.json").is_file() else None


def job_row(sweep: Sweep, job: Job, summary: dict[str, Any] | None, curves: pd.DataFrame) -> dict[str, Any]:
    """One table row: swept values, outcome, steps, final/best(/tail) metric, times, error."""
    summary = summary or {}
    metric = sweep.metric
    validation = curves.loc[curves["curve"] == f"val/{metric}", "value"].dropna()
    validation = validation[np.isfinite(validation.to_numpy(float))]
    row = {key: render(value) if isinstance(value, (list, dict)) else value for key, value in job.params.items()}
    row.update(status=outcome(summary or None, metric), steps=summary.get("steps"), **{metric: summary.get(metric)})
    row[f"best_{metric}"] = validation.min() if len(validation) else None
    if sweep.tail:
        row[f"tail_{metric}"] = validation.tail(max(1, math.ceil(sweep.tail * len(validation)))).mean() if len(validation) else None
    row.update(wall_time_s=summary.get("wall_time_s"), step_ms=summary.get("step_time_ms_median"),
               error=summary["status"].removeprefix("failed: ") if row["status"] == "failed" else None,
               run_dir=job.name)
    return row


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:80]


def markdown(frame: pd.DataFrame) -> str:
    """A Markdown table of the results (numbers to 4 significant digits, run dirs left out)."""
    columns = [c for c in frame.columns if c != "run_dir" and (c != "error" or frame[c].notna().any())]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines) + "\n"


def _label(params: dict[str, Any], exclude: Sequence[str] = (), hue: Sequence[str] | None = None) -> str:
    """A legend entry from swept values: the `hue` keys, or all but `exclude` (short key names;
    seeds share one label)."""
    keys = hue if hue is not None else [key for key in params if key not in exclude and key != "seed"]
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={render(params[key])}" for key in keys if key in params) or "run"


def _colours(labels: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per label: the default cycle, tab20 up to 20 labels, viridis beyond."""
    unique = list(dict.fromkeys(labels))
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    if len(unique) > len(cycle):
        cycle = plt.get_cmap("tab20").colors if len(unique) <= 20 else plt.get_cmap("viridis")(np.linspace(0, 1, len(unique)))
    return {label: cycle[i] for i, label in enumerate(unique)}


def log_scale_if_positive(ax: plt.Axes, values: pd.Series) -> None:
    """Log y axis (the paper's) when every value is positive, ticks as plain numbers."""
    values = pd.to_numeric(values, errors="coerce").dropna()
    if len(values) and values.min() > 0:
        ax.set_yscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:.4g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain if values.max() < 10 * values.min() else NullFormatter())


def _draw(ax: plt.Axes, curves: pd.DataFrame, jobs: Sequence[Job], x: str, labels: dict[str, str],
          colours: dict[str, Any], smooth: int) -> None:
    """One line per job and curve column (running mean over `smooth` logged points): colour by
    the job's label, line style by curve column."""
    styles = {curve: style for curve, style in zip(dict.fromkeys(curves["curve"]), ["-", "--", ":", "-."] * 4)}
    for job in jobs:
        label = labels[job.name]
        for curve, points in curves[curves["job"] == job.name].groupby("curve", sort=False):
            ax.plot(points[x], points["value"].rolling(smooth, min_periods=1).mean(), styles[curve],
                    color=colours[label], lw=1.2, label=label if len(styles) == 1 else f"{label} ({curve})")
    log_scale_if_positive(ax, curves["value"])
    ax.grid(alpha=0.3)


def _legend(fig: Figure, axes: np.ndarray) -> None:
    """One legend for the figure, without repeats (seeds of one label share an entry)."""
    entries = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        columns = max(1, min(4, 150 // max(len(label) for label in entries)))
        fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncol=columns, fontsize=8)


def learning_curves(curves: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep) -> Figure:
    """Every job's curves against steps (left) and training wall-clock (right): Fig. 6 style."""
    labels = {job.name: _label(job.params) for job in jobs}
    colours = _colours(list(labels.values()))
    fig, axes = plt.subplots(len(sweep.curves), 2, figsize=(11, 3.6 * len(sweep.curves)), squeeze=False,
                             layout="constrained")
    for row, curve in enumerate(sweep.curves):
        for col, x in enumerate(X_AXES):
            ax = axes[row, col]
            _draw(ax, curves[curves["curve"] == curve], jobs, x, labels, colours, sweep.smooth)
            ax.set_xlabel(X_AXES[x])
            ax.set_ylabel(curve)
    _legend(fig, axes)
    fig.suptitle(f"sweep {sweep.name}")
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
    labels = {job.name: _label(job.params, (rows, cols), hue) for job in jobs}
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
            ax.set_title(f"{rows.rsplit('.', 1)[-1]}={row_value}, {cols.rsplit('.', 1)[-1]}={col_value}", fontsize=9)
            if i == len(row_values) - 1:
                ax.set_xlabel(X_AXES[x])
            if j == 0:
                ax.set_ylabel(", ".join(sweep.curves))
    _legend(fig, axes)
    return fig


def versus(frame: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, x: str, log_x: bool = False,
           hue: Sequence[str] | None = None) -> Figure:
    """The final metric (the tail mean if `tail` is set; mean over seeds) against one swept value,
    a line per setting of the other swept keys (or of the `hue` keys): Fig. 5d style."""
    y = f"tail_{sweep.metric}" if sweep.tail else sweep.metric
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    labels = {job.name: _label(job.params, (x,), hue) for job in jobs}
    data = frame.assign(label=frame["run_dir"].map(labels), x=pd.to_numeric(frame[x], errors="coerce"),
                        y=pd.to_numeric(frame[y], errors="coerce"))
    colours = _colours(list(labels.values()))
    for label, points in data.groupby("label", sort=False):
        mean = points.groupby("x")["y"].mean()
        ax.plot(mean.index, mean.to_numpy(), "o-", color=colours[label], label=label)
    if log_x:
        ax.set_xscale("log")
    log_scale_if_positive(ax, data["y"])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def figures(frame: pd.DataFrame, curves: pd.DataFrame, jobs: Sequence[Job], sweep: Sweep, sweep_dir: Path) -> list[Path]:
    """learning_curves.png always; curve_grid.png and versus.png when the sweep's `plots` ask."""
    paths = [save(learning_curves(curves, jobs, sweep), sweep_dir / "learning_curves.png")]
    if "grid" in sweep.plots:
        paths.append(save(curve_grid(curves, jobs, sweep, **sweep.plots["grid"]), sweep_dir / "curve_grid.png"))
    if "versus" in sweep.plots:
        paths.append(save(versus(frame, jobs, sweep, **sweep.plots["versus"]), sweep_dir / "versus.png"))
    return paths


def iterative_baselines(sweep: Sweep, trained: dict[str, Path], out_dir: Path) -> dict[str, Any]:
    """Fig. 13: per-example GD and L-BFGS-B beside the trained networks (`sweep.iterative` holds
    `sip_train.iterative.compare`'s options). Results newer than every network are reused."""
    from sip_train.iterative import compare_runs

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


def wandb_settings(config: DictConfig) -> dict[str, Any] | None:
    """project and mode of the jobs' W&B logger, or None when W&B is off."""
    from sip_train.loggers import resolve_mode

    block = config.get("logger", {}).get("wandb")
    if block is None or resolve_mode(block.get("mode", "auto")) == "disabled":
        return None
    return {"project": block.get("project", "sip-train"), "mode": block.get("mode", "auto")}


def log_to_wandb(sweep: Sweep, sweep_dir: Path, frame: pd.DataFrame, paths: Sequence[Path], settings: dict[str, Any]) -> None:
    """One W&B run `<sweep>-report` in the sweep's group, holding the figures and the table."""
    import wandb

    from sip_train.loggers import wandb_logger

    run = wandb_logger(save_dir=str(sweep_dir), name=f"{sweep.name}-report", group=sweep.name,
                       tags=["sweep-report"], **settings).experiment
    try:
        run.log({f"sweep/{path.stem}": wandb.Image(str(path)) for path in paths}
                | {"sweep/results": wandb.Table(dataframe=frame.astype(str))})
    finally:
        wandb.finish()


def report(sweep: Sweep, jobs: Sequence[Job], sweep_dir: Path, config: DictConfig | None = None) -> dict[str, Any]:
    """Aggregate every job of `sweep` in `sweep_dir` into tables and figures (and W&B when on).

    Returns:
        {"table": DataFrame, "csv", "markdown", "curves": paths, "figures": [paths], "iterative": paths or None}
    """
    sweep_dir = Path(sweep_dir)
    rows, curves = [], []
    for job in jobs:
        summary = _summary(sweep_dir / job.name)
        job_curves = read_curves(sweep_dir / job.name, list(dict.fromkeys([*sweep.curves, f"val/{sweep.metric}"])),
                                 (summary or {}).get("step_time_ms_median"))
        rows.append(job_row(sweep, job, summary, job_curves))
        curves.append(job_curves.assign(job=job.name))
    frame = pd.DataFrame(rows)
    curve_frame = pd.concat(curves, ignore_index=True)
    frame.to_csv(sweep_dir / "results.csv", index=False)
    (sweep_dir / "results.md").write_text(f"# sweep {sweep.name}\n\n" + markdown(frame))
    curve_frame.to_csv(sweep_dir / "curves.csv", index=False)
    paths = figures(frame, curve_frame, jobs, sweep, sweep_dir)
    trained = {_label(job.params): sweep_dir / job.name for job, row in zip(jobs, rows) if row["status"] == "completed"}
    iterative = iterative_baselines(sweep, trained, sweep_dir / "iterative") if sweep.iterative and trained else None
    settings = wandb_settings(config) if config is not None else None
    if settings is not None:
        log_to_wandb(sweep, sweep_dir, frame, paths + (iterative["figures"] if iterative else []), settings)
    return {"table": frame, "csv": sweep_dir / "results.csv", "markdown": sweep_dir / "results.md",
            "curves": sweep_dir / "curves.csv", "figures": paths, "iterative": iterative}
