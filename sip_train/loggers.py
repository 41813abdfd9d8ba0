"""Weights & Biases that never blocks a run: online when logged in, offline otherwise."""
from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

import wandb
from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)
MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """True if an API key is in WANDB_API_KEY or in the netrc entry of the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str = "auto") -> str:
    """The W&B mode to use: WANDB_MODE wins, then `mode`; "auto" is online only with credentials."""
    mode = os.environ.get("WANDB_MODE", mode)
    if mode not in MODES and mode != "dryrun":
        raise ValueError(f"logger.wandb.mode={mode!r} is invalid: choose one of {list(MODES)}")
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return "offline" if mode == "dryrun" else mode


def wandb_logger(
    save_dir: str,
    project: str = "sip-train",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    run_id: str | None = None,
    init_timeout_s: float = 60.0,
) -> WandbLogger:
    """A Lightning W&B logger whose run is created now, in a mode that cannot prompt or hang.

    Online runs that fail to start (no network, bad key) fall back to offline with a warning.
    """
    chosen = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    options = dict(project=project, name=name, group=group, tags=list(tags or []), dir=str(save_dir), id=run_id,
                   resume="allow" if run_id else None, reinit="finish_previous")
    try:
        run = wandb.init(mode=chosen, settings=wandb.Settings(init_timeout=init_timeout_s, silent=True), **options)
    except Exception as error:  # noqa: BLE001 - any failure to go online must not stop training
        if chosen != "online":
            raise
        log.warning("W&B could not start online (%s); logging offline instead", error)
        run = wandb.init(mode="offline", settings=wandb.Settings(silent=True), **options)
    return WandbLogger(experiment=run, save_dir=str(save_dir), log_model=False)
