"""A run's identity as its configuration states it, and the run directory named after it.

`${run_name:}` (registered on import) names the default run directory (conf/config.yaml): the same
command always finds the same directory, and any change of a result-affecting value (seed, lr, grid,
an edited experiment file) leads to another. Light on purpose (OmegaConf and hashlib only): the sweeper
plugin, which every Hydra start loads, compares jobs by the same identity.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: Keys that only extend or observe a run (or are copied into the identity elsewhere: `inverse` is part of
#: the optimizer block of the rules that use it; updates_per_step and compile regroup the same updates).
#: paper_lr and paper_sgd_momentum are an experiment's lookups: what they select is in the optimizer block.
#: `name` tags a run, it does not change it.
NOT_IDENTITY = ("trainer", "logger", "run_dir", "resume", "ckpt_path", "threads", "figure_examples", "compile",
                "divergence_check_every", "validate_at_start", "network_defaults", "paper_lr", "paper_sgd_momentum",
                "sweep", "inverse", "updates_per_step", "name", "hydra")
#: Identity keys added after runs were first recorded, each with the value that does what runs did before
#: it existed: a record without the key matches a run with that value.
ADDED_LATER = {"data.steps_per_draw": 1}
HASH_LENGTH = 8


def _resolved(cfg: DictConfig, key: str) -> Any:
    """The value of `key` as plain data, resolved where it resolves (the start-up checks name what does not)."""
    try:
        value = cfg[key]
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except OmegaConfBaseException:
        node = cfg._get_node(key)
        return OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node._value()


def config_identity(cfg: DictConfig) -> dict[str, Any]:
    """Every result-affecting value a config states: the resolved config less NOT_IDENTITY, plus the
    trainer's precision (the accelerator and process count a run gets are checked against its checkpoint)."""
    identity = {key: _resolved(cfg, key) for key in cfg if key not in NOT_IDENTITY}
    identity["trainer"] = {"precision": str(_resolved(cfg.trainer, "precision"))} if "trainer" in cfg else {}
    return identity


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a.b.c": value} of a nested dict (an empty dict is a value of its own)."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): tree}


def identity_hash(identity: dict[str, Any]) -> str:
    """A short, stable hash of an identity; keys of ADDED_LATER at their old value do not count, so runs
    recorded before such a key existed keep their hash."""
    flat = {key: value for key, value in flatten(identity).items() if ADDED_LATER.get(key, object()) != value}
    text = json.dumps(flat, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_LENGTH]


def differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`key: <before> there, <now> now` for every flattened key whose value differs (a key of ADDED_LATER
    missing on one side counts as its old value; where a class differs, its settings are not listed too)."""
    old, new = flatten(before), flatten(now)
    old = {**{key: value for key, value in ADDED_LATER.items() if key in new}, **old}
    differing = [key for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    replaced = tuple(key.removesuffix("_target_") for key in differing if key.endswith("_target_"))
    return [f"{key}: {old.get(key)!r} there, {new.get(key)!r} now" for key in differing
            if key.endswith("_target_") or not key.startswith(replaced)]


def run_name(*, _root_: DictConfig) -> str:
    """The last part of the default run directory: `[<name>-]<hash of the config's identity>`."""
    digest = identity_hash(config_identity(_root_))
    name = _root_.get("name")
    return f"{name}-{digest}" if name else digest


if not OmegaConf.has_resolver("run_name"):
    OmegaConf.register_new_resolver("run_name", run_name)
