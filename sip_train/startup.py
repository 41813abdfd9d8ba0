"""Start-up checks: a bad value of any type, or a combination that cannot work, stops a run before
training with one line naming the key, the value and what is allowed (a ValueError that `train`
turns into a ConfigError and a summary.json)."""
from __future__ import annotations

import collections.abc
import inspect
import re
import types
import typing
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_object
from lightning.pytorch import Trainer
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

from sip_train.problems.base import InverseProblem
from sip_train.rules.base import UpdateRule

FULL_PRECISION = ("32-true", "64-true")


def check_resolvable(cfg: DictConfig) -> None:
    """Every interpolation of the config resolves; a missing entry of a lookup table (an experiment's
    paper_lr for a rule it has no learning rate for) names the entries it has."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationKeyError as error:
        key = error.full_key
        raw = OmegaConf.to_container(cfg, resolve=False)
        for part in key.split("."):
            raw = raw[part]
        missing = re.search(r"Interpolation key '([^']+)' not found", str(error))
        table, _, entry = (missing.group(1) if missing else "").rpartition(".")
        node = OmegaConf.select(cfg, table, throw_on_resolution_failure=False) if table else None
        allowed = (f"{table} has no {entry!r}; choose one of {sorted(node.keys())} or set {key} directly"
                   if isinstance(node, DictConfig) else str(error).splitlines()[0])
        raise ValueError(f"{key}={raw!r} is invalid: {allowed}") from None  # omegaconf's own message is several lines
    except OmegaConfBaseException as error:
        raise ValueError(f"{error.full_key} is invalid: {str(error).splitlines()[0]}") from None


def _describe(hint: Any) -> str:
    """What a type hint allows, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
             list: "a list", tuple: "a list", dict: "a mapping"}
    return words.get(origin or hint, getattr(hint, "__name__", str(hint)))


def _matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value fits a type hint (hints this cannot judge count as fitting)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    if (origin or hint) in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if (origin or hint) in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return True


def _check_block(block: dict, key: str) -> None:
    """Check a block's values against the type hints of its `_target_`'s constructor, nested blocks too."""
    try:
        target = get_object(block["_target_"])
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - a target whose hints cannot be read is checked by its constructor
        hints = {}
    for name, value in block.items():
        if isinstance(value, dict) and "_target_" in value:
            _check_block(value, f"{key}.{name}")
        elif not name.startswith("_") and name in hints and not _matches(value, hints[name]):
            raise ValueError(f"{key}.{name}={value!r} is invalid: must be {_describe(hints[name])}")


def check_types(cfg: DictConfig) -> None:
    """Every value of every block built from a `_target_` (problem, optimizer, network, data, ...) has
    the type its constructor declares, so `problem.resolution=abc` is named, not a TypeError deep inside."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key, block in resolved.items():
        if isinstance(block, dict) and "_target_" in block and key not in ("trainer", "hydra"):
            _check_block(block, key)


def check_devices(cfg: DictConfig) -> None:
    """A trainer asking for a GPU on a machine without one is refused in one line (not Lightning's traceback)."""
    accelerator = cfg.trainer.get("accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.accelerator={accelerator!r} is invalid: no CUDA GPU is available on this machine; "
                         "use trainer=cpu (or trainer.accelerator=cpu), or trainer.accelerator=auto")


def check_combinations(cfg: DictConfig, problem: InverseProblem, network: torch.nn.Module, rule: UpdateRule,
                       trainer: Trainer) -> None:
    """Refuse combinations that would crash mid-run, from what the rule declares: a double backward on complex
    weights or under DDP, a rule that needs full precision in reduced precision, a single-process rule under
    DDP, and DDP inside a multirun (it relaunches the command)."""
    optimizer = _choice(cfg, "optimizer")
    if rule.needs_double_backward and any(p.is_complex() for p in network.parameters()):
        raise ValueError(f"optimizer={optimizer} is invalid with network={_choice(cfg, 'network')}: the network has "
                         "complex weights, which this second-order rule cannot handle; use a real-valued network "
                         "(e.g. network=unet) or a first-order optimizer")
    if rule.needs_full_precision and str(trainer.precision) not in FULL_PRECISION:
        raise ValueError(f"trainer.precision={cfg.trainer.precision!r} is invalid with optimizer={optimizer}: its "
                         f"curvature products need full precision; choose one of {list(FULL_PRECISION)}")
    if trainer.world_size > 1 and rule.single_process:
        raise ValueError(f"optimizer={optimizer} is invalid with {trainer.world_size} processes (DDP): it trains on "
                         "one device only, nothing averages its updates across processes; use one device "
                         "(trainer.devices=1)")
    if trainer.world_size > 1 and rule.needs_double_backward:
        raise ValueError(f"optimizer={optimizer} is invalid with {trainer.world_size} processes (DDP): its double "
                         "backward (create_graph) is not supported by DDP; use one device (trainer.devices=1)")
    if trainer.world_size > 1 and HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(f"trainer.devices={cfg.trainer.devices!r} ({trainer.world_size} processes) is invalid in a "
                         "multirun or sweep: DDP would relaunch the whole sweep once per rank; use one device per "
                         "job (trainer.devices=1), or run the DDP job on its own with train.py")


def _choice(cfg: DictConfig, group: str) -> str:
    """The option of a config group a run uses (e.g. optimizer=adahessian), or its target class."""
    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get(group)
        if isinstance(choice, str):
            return choice
    return cfg[group]._target_.rsplit(".", 1)[-1].lower()
