"""What a run directory holds, and moving an earlier run out of the way so that records never mix."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sip_train import exit_codes

SET_ASIDE_PREFIX = "replaced-"  # <run dir>/replaced-<date>/: an earlier run that resume=false replaced
LOG_SUFFIX = ".log"             # Hydra's job log: opened before the run starts, so copied and emptied, not moved


def _refused_start_record(path: Path) -> bool:
    """Whether `path` is the summary.json of a refused start (all a refused start leaves in a new directory)."""
    try:
        return path.name == "summary.json" and json.loads(path.read_text()).get("exit_code") == exit_codes.CONFIG_ERROR
    except (OSError, ValueError):
        return False


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds records of a run: anything but runs set aside, Hydra's log of this start and
    the summary.json of a refused start."""
    return run_dir.is_dir() and any(not entry.name.startswith(SET_ASIDE_PREFIX) and entry.suffix != LOG_SUFFIX
                                    and not _refused_start_record(entry) for entry in run_dir.iterdir())


def set_aside(run_dir: Path) -> Path:
    """Move the earlier run's records into <run_dir>/replaced-<date>/ (a log file is copied there and emptied,
    as this start already writes to it); earlier runs set aside stay where they are. Returns that folder."""
    stamp = f"{SET_ASIDE_PREFIX}{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    target, number = run_dir / stamp, 1
    while target.exists():  # two in one second
        number += 1
        target = run_dir / f"{stamp}-{number}"
    target.mkdir()
    for entry in list(run_dir.iterdir()):
        if entry == target or entry.name.startswith(SET_ASIDE_PREFIX):
            continue
        if entry.suffix == LOG_SUFFIX and entry.is_file():
            shutil.copy2(entry, target / entry.name)
            with entry.open("r+") as log:
                log.truncate(0)
        else:
            entry.rename(target / entry.name)
    return target


def save_hydra_files(cfg: DictConfig, hydra: DictConfig | None, run_dir: Path) -> None:
    """What Hydra writes into <run_dir>/.hydra/ (config.yaml, hydra.yaml, overrides.yaml), written here
    only once a start has passed its checks (conf/config.yaml turns Hydra's own copy off)."""
    folder = run_dir / ".hydra"
    folder.mkdir(exist_ok=True)
    OmegaConf.save(cfg, folder / "config.yaml")
    if hydra is not None:
        OmegaConf.save(OmegaConf.create({"hydra": hydra}), folder / "hydra.yaml")
        OmegaConf.save(hydra.overrides.task, folder / "overrides.yaml")
