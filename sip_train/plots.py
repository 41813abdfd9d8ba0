"""Figures of validation examples, shared by the problems: a default for any shapes of x and y, and
the step/error title every validation figure gets."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure, SubFigure  # noqa: E402
from matplotlib.layout_engine import PlaceHolderLayoutEngine  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def _numpy(batch: torch.Tensor) -> np.ndarray:
    return batch.detach().float().cpu().numpy()


def image(ax: Axes, field: np.ndarray, title: str = "", **style) -> None:
    """One 2D field as an image with its own colourbar (no ticks: the axes are grid cells)."""
    shown = ax.imshow(field, origin="lower", **{"cmap": "magma", **style})
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)


def _fields(panel: SubFigure, estimate: np.ndarray, reference: np.ndarray, names: tuple[str, str]) -> None:
    """Rows of examples, three columns per channel of the two batches (B, C, H, W): the estimate and the
    reference on one colour scale per example, and their difference (the error map, e.g. x - x*) on a
    diverging scale centred at 0."""
    examples, channels = estimate.shape[:2]
    axes = panel.subplots(examples, 3 * channels, squeeze=False)
    difference_name = " - ".join(name.split()[-1] for name in names)  # "predicted x", "true x*" -> "x - x*"
    for row in range(examples):
        for channel in range(channels):
            pair = (estimate[row, channel], reference[row, channel])
            low, high = min(p.min() for p in pair), max(p.max() for p in pair)
            difference = pair[0] - pair[1]
            largest = max(float(np.abs(difference).max()), np.finfo(np.float32).tiny)
            shown = [(pair[0], names[0], dict(vmin=low, vmax=high)), (pair[1], names[1], dict(vmin=low, vmax=high)),
                     (difference, difference_name, dict(cmap="RdBu_r", vmin=-largest, vmax=largest))]
            for offset, (field, name, style) in enumerate(shown):
                label = f"{name} [{channel}]" if channels > 1 else name
                image(axes[row, 3 * channel + offset], field, label if row == 0 else "", **style)
        axes[row, 0].set_ylabel(f"example {row}", fontsize=8)


def _signals(panel: SubFigure, estimate: np.ndarray, reference: np.ndarray, names: tuple[str, str]) -> None:
    """Rows of examples, a column per channel: the estimate over the reference, against the index."""
    examples, channels = estimate.shape[:2]
    axes = panel.subplots(examples, channels, squeeze=False, sharex=True)
    marker = "o" if estimate.shape[-1] <= 16 else None  # short vectors: show each component
    for row in range(examples):
        for channel in range(channels):
            ax = axes[row, channel]
            ax.plot(reference[row, channel], color="0.55", lw=2.2, marker=marker, label=names[1])
            ax.plot(estimate[row, channel], color="C1", lw=1.1, marker=marker, ms=3, label=names[0])
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[row, 0].set_ylabel(f"example {row}", fontsize=8)
    for channel in range(channels):
        axes[-1, channel].set_xlabel("index" + (f" (channel {channel})" if channels > 1 else ""), fontsize=8)
    panel.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8)


def _scalars(panel: SubFigure, estimate: np.ndarray, reference: np.ndarray, names: tuple[str, str]) -> None:
    """One scatter plot: the estimate of each example against its reference, over the identity line."""
    ax = panel.subplots()
    reference, estimate = reference.reshape(-1), estimate.reshape(-1)
    span = [min(reference.min(), estimate.min()), max(reference.max(), estimate.max())]
    ax.plot(span, span, color="0.6", lw=1, label="identity")
    ax.scatter(reference, estimate, color="C1", s=22, label="examples")
    ax.set(xlabel=names[1], ylabel=names[0])
    ax.legend(fontsize=8, loc="upper left")


def _layout(shape: tuple[int, ...]) -> str:
    """How one example of this shape is drawn: 'scalars', 'signals' (C, N) or 'fields' (C, H, W)."""
    if int(np.prod(shape)) == 1:
        return "scalars"
    return "fields" if len(shape) == 3 else "signals"


def examples_figure(pairs: dict[str, tuple[torch.Tensor, torch.Tensor, tuple[str, str]]]) -> Figure:
    """A panel per named pair of batches (estimate, reference, their labels), drawn by their shape:
    2D fields (C, H, W) as images with colourbars beside their difference, vectors and signals as line plots, scalars as a
    scatter plot of estimate against reference."""
    arrays = {}
    for name, (estimate, reference, labels) in pairs.items():
        shape = tuple(estimate.shape[1:])
        estimate, reference = _numpy(estimate), _numpy(reference)
        if _layout(shape) == "signals":  # (N,) or (C, N) or more dims: channels first, the rest flattened
            estimate = estimate.reshape(len(estimate), shape[0] if len(shape) > 1 else 1, -1)
            reference = reference.reshape(estimate.shape)
        arrays[name] = (_layout(shape), estimate, reference, labels)
    examples = len(next(iter(arrays.values()))[1])
    widths = [max(1.6, 2.8 * (3 * est.shape[1] if kind == "fields" else est.shape[1] if kind == "signals" else 1.3))
              for kind, est, _, _ in arrays.values()]
    height = 3.2 if all(kind == "scalars" for kind, *_ in arrays.values()) else 2.3 * examples + 0.6
    fig = plt.figure(figsize=(sum(widths), height), layout="constrained")
    panels = fig.subfigures(1, len(arrays), squeeze=False, width_ratios=widths)[0]
    draw = {"fields": _fields, "signals": _signals, "scalars": _scalars}
    for panel, (name, (kind, estimate, reference, labels)) in zip(panels, arrays.items()):
        draw[kind](panel, estimate, reference, labels)
        panel.suptitle(name, fontsize=10)
    return fig


def add_title(fig: Figure, title: str) -> None:
    """Put `title` (e.g. the step and the validation error) on top of a figure, before any title it has."""
    existing = fig.get_suptitle()
    fig.suptitle(f"{title}\n{existing}" if existing else title, fontsize=10)
    engine = fig.get_layout_engine()
    if engine is None or isinstance(engine, PlaceHolderLayoutEngine):  # laid out once (tight_layout): make room
        try:
            fig.set_layout_engine("constrained")
        except RuntimeError:  # colourbars made for another layout: lay it out once more, title included
            fig.tight_layout()
