"""What a run prints: one line saying what runs, one saying where an offline W&B run is, and no
third-party noise (known-harmless warnings and info lines are silenced by name, nothing else)."""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

#: Warnings of third-party libraries that say nothing about the run: (message regex, category).
HARMLESS_WARNINGS = [
    # Lightning's own pytree helper uses a torch class deprecated in torch 2.10; nothing a user can change.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # A resumed run writes into its own checkpoint directory on purpose.
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
]
#: Lightning info lines that the run's own lines replace (the banner names the device, "continuing from"
#: the checkpoint, the closing line the steps done) or that advertise.
HARMLESS_INFO = re.compile(r"litlogger|^GPU available: |^TPU available: |^`Trainer\.fit` stopped: `max_steps="
                           r"|^Restoring states from the checkpoint path at |^Restored all states from the checkpoint")
#: The loggers Lightning's rank-zero info lines come from.
LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not HARMLESS_INFO.search(record.getMessage())


def silence_known_warnings() -> None:
    """Silence, by message, the known-harmless third-party warnings and info lines (once per process)."""
    for message, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name in LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropHarmless) for f in logger.filters):
            logger.addFilter(_DropHarmless())


def banner(problem: str, optimizer: str, network: str, device: str, run_dir: str | Path, inverse: str | None = None) -> str:
    """The one line a run starts with: what trains on what (and which inverse solver SIP uses), and where its
    results go."""
    inverse = f"inverse {inverse}, " if inverse else ""
    return f"training {problem} with {optimizer} ({inverse}{network} network) on {device}; run directory {run_dir}"


def offline_notice(sync_dir: str | Path) -> str:
    """The one line an offline W&B run prints: that it is offline, where it is, and the command that uploads it."""
    return f"W&B is offline: the run is saved in {sync_dir}; upload it with `wandb sync {sync_dir}`"
