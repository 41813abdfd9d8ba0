"""The contents of a run directory as hashes, to show that something changed no byte of it."""
from __future__ import annotations

import hashlib
from pathlib import Path


def snapshot(run_dir: Path) -> dict[str, str]:
    """Every file under a directory with the hash of its bytes; W&B's files by name only (its service process
    may still be writing them after a run has finished)."""
    return {str(path.relative_to(run_dir)): "wandb" if "wandb/" in path.relative_to(run_dir).as_posix() else
            hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(run_dir.rglob("*")) if path.is_file()}
