"""Reduced precision for the network only: under bf16-mixed or 16-mixed the physics, the inverse solvers and
the metrics run in the problem's own dtype with autocast off (a spectral solve or a CG in bfloat16 is
wrong by far more than the network's rounding), unless the problem opts in (`autocast_physics`)."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.precision import MixedPrecision

from sip_train.problems.base import InverseProblem

REDUCED = (torch.float16, torch.bfloat16)


class PhysicsPrecision:
    """Where autocast applies in an update or a validation step: `physics()` around all of it (autocast off),
    `network()` around the network's forward pass (Lightning's autocast again), `full(x)` for its output."""

    def __init__(self, trainer: Trainer, problem: InverseProblem) -> None:
        plugin = trainer.precision_plugin
        self.active = isinstance(plugin, MixedPrecision) and not problem.autocast_physics
        self._plugin, self._device_type = plugin, trainer.strategy.root_device.type

    def physics(self) -> AbstractContextManager:
        return torch.autocast(self._device_type, enabled=False) if self.active else nullcontext()

    def network(self) -> AbstractContextManager:
        return self._plugin.forward_context() if self.active else nullcontext()

    def full(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output in float32 where autocast made it float16 or bfloat16."""
        return x.float() if self.active and x.dtype in REDUCED else x
