"""Figures of validation examples, shared by the problems."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def field_rows(columns: dict[str, torch.Tensor], examples: int = 3, pairs: int = 2) -> Figure:
    """One row per example, one column per named 2D field batch (B, 1, H, W).

    Consecutive groups of `pairs` columns share one colour scale per row (e.g. observed and
    simulated y, predicted and true x), so they can be compared by eye.
    """
    examples = min(examples, len(next(iter(columns.values()))))
    images = [fields[:examples].detach().float().cpu().squeeze(1).numpy() for fields in columns.values()]
    fig, axes = plt.subplots(examples, len(columns), figsize=(2.6 * len(columns), 2.4 * examples), squeeze=False)
    for column, title in enumerate(columns):
        group = images[column - column % pairs : column - column % pairs + pairs]
        for row in range(examples):
            ax = axes[row, column]
            low, high = min(g[row].min() for g in group), max(g[row].max() for g in group)
            image = ax.imshow(images[column][row], origin="lower", cmap="magma", vmin=low, vmax=high)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
