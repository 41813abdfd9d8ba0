"""Figures of validation examples, shared by the problems."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def field_rows(columns: dict[str, torch.Tensor], examples: int = 3) -> Figure:
    """One row per example, one column per named 2D field batch (B, 1, H, W)."""
    examples = min(examples, len(next(iter(columns.values()))))
    fig, axes = plt.subplots(examples, len(columns), figsize=(2.6 * len(columns), 2.4 * examples), squeeze=False)
    for column, (title, fields) in enumerate(columns.items()):
        for row in range(examples):
            ax = axes[row, column]
            image = ax.imshow(fields[row].detach().float().cpu().squeeze(0).numpy(), origin="lower", cmap="magma")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
