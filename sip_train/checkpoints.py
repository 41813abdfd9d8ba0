"""Which checkpoint a run continues from, checked before training starts."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sip_train.resolvers import NOT_IDENTITY, differences

LAST = "last.ckpt"


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run keeps its checkpoints (last.ckpt and the best one)."""
    return Path(run_dir) / "checkpoints"


def newest_checkpoint(run_dir: str | Path) -> Path | None:
    """The most recent of <run_dir>/checkpoints/last.ckpt and Lightning's SLURM hpc_ckpt_*.ckpt, if any."""
    candidates = [checkpoint_dir(run_dir) / LAST, *Path(run_dir).glob("hpc_ckpt_*.ckpt")]
    existing = [path for path in candidates if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime) if existing else None


def resolve_resume(run_dir: str | Path, ckpt_path: str | None, resume: bool) -> Path | None:
    """The checkpoint to continue from: `ckpt_path` (a file, or "last" for this run's newest), else, when
    `resume` is on, this run directory's newest checkpoint if it has one, else None (a fresh start).

    Raises:
        ValueError: naming the path, if the checkpoint is missing.
    """
    if ckpt_path in (None, "", "last"):
        path = newest_checkpoint(run_dir) if (resume or ckpt_path == "last") else None
        if ckpt_path == "last" and path is None:
            raise ValueError(f"ckpt_path=last: no checkpoint in {checkpoint_dir(run_dir)} to continue from")
    else:
        path = Path(ckpt_path)
        if not path.is_file():
            raise ValueError(f"ckpt_path={ckpt_path}: no such checkpoint file")
    return path


def read_checkpoint(path: Path) -> dict:
    """A checkpoint's contents; a ValueError naming the path if it is unreadable."""
    import torch  # here, not at the top: the sweeper imports this module, and `--help` must not wait for torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any failure to read means the file is unusable
        raise ValueError(f"checkpoint {path} is corrupt or unreadable ({type(error).__name__}: {error})") from error


IDENTITY_KEY = "run_identity"


def run_identity(cfg: DictConfig, precision: str, accelerator: str, processes: int) -> dict[str, Any]:
    """Every result-affecting value of a run: the resolved config less NOT_IDENTITY, plus the numerical
    precision, the accelerator kind and the number of processes the trainer runs with."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    identity = {key: value for key, value in resolved.items() if key not in NOT_IDENTITY}
    identity["trainer"] = {"precision": str(precision), "accelerator": accelerator, "processes": int(processes)}
    return identity


def saved_identity(checkpoint: dict) -> dict[str, Any]:
    """The identity a checkpoint was saved with (older checkpoints: the module's problem, network and seed)."""
    if IDENTITY_KEY in checkpoint:
        return checkpoint[IDENTITY_KEY]
    hparams = checkpoint.get("hyper_parameters", {})
    return {key: hparams.get(key) for key in ("problem", "network", "seed")}


def check_same_run(path: Path, checkpoint: dict, identity: dict[str, Any]) -> None:
    """Refuse to continue from a checkpoint of a differently configured run (it would silently mix two
    experiments), naming every differing key with both values and the two ways out."""
    saved = saved_identity(checkpoint)
    wanted = identity if IDENTITY_KEY in checkpoint else {key: identity.get(key) for key in saved}
    differing = differences(saved, wanted)
    if differing:
        raise ValueError(f"checkpoint {path} belongs to a different run ({'; '.join(differing)}): choose another "
                         "run directory (name=<tag> or hydra.run.dir=...), or resume=false to start afresh in this one")


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after `last_step` from a metrics CSV, so a resumed run does not repeat them."""
    if not path.is_file():
        return
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        fields, rows = reader.fieldnames or [], [row for row in reader if float(row["step"]) <= last_step]
    temporary = path.with_suffix(".csv.tmp")
    with temporary.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)
