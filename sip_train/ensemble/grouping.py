"""Which jobs can train together: the capability of a job to be an ensemble member, and the key of its group
(its configuration less the values members may differ in)."""
from __future__ import annotations

import functools
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from sip_train.ensemble.members import PRECISION
from sip_train.ensemble.optimizers import STACKED

#: Keys every job has of its own (its directory, its loggers and their run names): they never split groups.
OWN_KEYS = ("run_dir", "logger")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def vectorisable_keys(cfg: DictConfig) -> list[str]:
    """The keys whose values members of one ensemble may differ in: the seed, the optimizer's learning rate
    and scalar settings, and the scalar parameters the rule class and the problem class declare in their
    `ensemble_parameters`."""
    keys = ["seed", "optimizer.lr"]
    keys += [f"optimizer.{name}" for name in get_class(cfg.optimizer._target_).ensemble_parameters]
    inner = cfg.optimizer.get("optimizer")
    if isinstance(inner, DictConfig):
        keys += [f"optimizer.optimizer.{key}" for key, value in inner.items()
                 if _number(value) or (isinstance(value, (list, tuple)) or OmegaConf.is_list(value))
                 and all(_number(v) for v in value)]
    problem_class = get_class(cfg.problem._target_)
    keys += [f"problem.{name}" for name in problem_class.ensemble_parameters]
    return keys


def group_key(cfg: DictConfig) -> str:
    """The job's configuration with the vectorisable values blanked (an optimizer setting keeps whether it is
    zero, which decides which terms the optimizer computes): jobs with equal keys can train as one ensemble."""
    tree = OmegaConf.to_container(cfg, resolve=True)
    own = [str(tree["run_dir"])] if "run_dir" in tree else []
    for key in OWN_KEYS:
        tree.pop(key, None)
    for key in vectorisable_keys(cfg):
        *path, last = key.split(".")
        node = functools.reduce(lambda n, k: n.get(k, {}), path, tree)
        if last in node:
            value = node[last]
            zero = key.startswith("optimizer.optimizer.") and _number(value) and value == 0
            node[last] = "<zero>" if zero else "<value>"
    text = OmegaConf.to_yaml(OmegaConf.create(tree), sort_keys=True)
    for value in own:  # paths inside the run directory (the loggers' save_dir) are the job's own too
        text = text.replace(value, "<own>")
    return text


def why_single(cfg: DictConfig) -> str | None:
    """Why this job cannot be an ensemble member (one line), or None if it can. Decided by what the rule,
    its inverse solver, its optimizer, the network and the trainer settings declare or need."""
    trainer = cfg.trainer
    if trainer.get("max_time") is not None:
        return "a wall-clock budget (trainer.max_time) ends each run at its own step"
    if trainer.get("strategy") not in (None, "auto") or str(trainer.get("devices", 1)) not in ("1", "auto"):
        return "several processes per run (DDP)"
    if str(trainer.get("precision", PRECISION)) not in (PRECISION, "32"):
        return f"precision {trainer.get('precision')} (ensembles train in {PRECISION})"
    rule = instantiate(cfg.optimizer)
    name = type(rule).__name__
    if rule.needs_double_backward:
        return f"rule {name} back-propagates through a gradient (a double backward)"
    if rule.single_process or not rule.vectorizable:
        return f"rule {name} makes an update of its own kind (not one backward of a loss per member)"
    inverse = getattr(rule, "inverse", None)  # only rules that use an inverse solver have one
    if inverse is not None and not inverse.vectorizable:
        return f"inverse solver {inverse.name} is not per example"
    factory = rule.optimizer_factory
    optimizer_class = factory.func if isinstance(factory, functools.partial) else factory
    if optimizer_class not in STACKED:
        return f"optimizer {getattr(optimizer_class, '__name__', optimizer_class)} has no ensemble version " \
               f"(supported: {', '.join(sorted(c.__name__ for c in STACKED))})"
    problem = instantiate(cfg.problem)
    network = instantiate(cfg.network, in_shape=problem.y_shape, out_shape=problem.x_shape)
    if any(True for _ in network.buffers()):
        return "the network keeps buffers (batch norm statistics), which vmap cannot update per member"
    if any(isinstance(p, torch.nn.parameter.UninitializedParameter) for p in network.parameters()):
        return "the network has lazily initialised parameters"
    return None


def check_one_group(cfgs: list[DictConfig]) -> None:
    """Refuse, in one line naming a key, jobs that differ in more than the vectorisable values."""
    keys = [group_key(cfg) for cfg in cfgs]
    for cfg, key in zip(cfgs[1:], keys[1:]):
        if key != keys[0]:
            first, other = keys[0].splitlines(), key.splitlines()
            line = next((b for a, b in zip(first, other) if a != b), other[-1])
            raise ValueError(f"jobs {cfgs[0].run_dir} and {cfg.run_dir} differ in more than the values an ensemble's "
                             f"members may differ in (near `{line.strip()}`): train them in separate ensembles")
