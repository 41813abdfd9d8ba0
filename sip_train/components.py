"""Building a run's parts from their config blocks: the problem, the update rule and the network."""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sip_train.problems.base import InverseProblem
from sip_train.rules.base import UpdateRule


def plain_block(block: DictConfig | dict) -> DictConfig:
    """A config block resolved where it stands in the full config (network blocks read network_defaults),
    as a plain copy that no longer depends on the rest of the config."""
    return OmegaConf.create(OmegaConf.to_container(block, resolve=True) if isinstance(block, DictConfig) else block)


def build_components(
    problem: DictConfig, optimizer: DictConfig, network: DictConfig, seed: int
) -> tuple[InverseProblem, torch.nn.Module, UpdateRule]:
    """Instantiate problem, update rule and network from their config blocks, and let the rule check that it
    can train this network on this problem.

    The network is built right after seeding, so one seed gives the same initial weights
    whatever the update rule: methods are compared from the same start.
    """
    problem_obj: InverseProblem = instantiate(problem)
    rule: UpdateRule = instantiate(optimizer)
    torch.manual_seed(seed)
    network_obj = instantiate(network, in_shape=problem_obj.y_shape, out_shape=problem_obj.x_shape)
    rule.check(problem_obj, network_obj)
    return problem_obj, network_obj, rule
