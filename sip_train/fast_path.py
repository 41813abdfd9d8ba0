"""The fast path of a training update: on one device in 32-bit precision, backward and the optimizer step
run directly, without Lightning's strategy and precision plugin, which there only call hooks. Taken only
when nothing overrides those hooks; otherwise the run goes through Lightning and says so once."""
from __future__ import annotations

import logging

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

from sip_train import lightning_internals

log = logging.getLogger(__name__)

#: The hooks that Lightning's backward and optimizer step call and the fast path does not.
SKIPPED_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
#: The LightningModule's own, beside those.
SKIPPED_MODULE_HOOKS = (*SKIPPED_HOOKS, "backward")


def hooks_in_the_way(trainer: Trainer, module: LightningModule) -> list[str]:
    """"Owner.hook" for every callback of the trainer, and the module, that overrides a hook the fast path skips."""
    found = [f"{type(callback).__name__}.{hook}" for callback in trainer.callbacks for hook in SKIPPED_HOOKS
             if is_overridden(hook, callback, parent=Callback)]
    return found + [f"{type(module).__name__}.{hook}" for hook in SKIPPED_MODULE_HOOKS
                    if is_overridden(hook, module, parent=LightningModule)]


def use_fast_path(trainer: Trainer, module: LightningModule) -> bool:
    """Whether updates may step directly: one device, 32-bit precision (Lightning's plain `Precision`), and no
    hook that Lightning would call in between; says once why not when only hooks prevent it."""
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    hooks = hooks_in_the_way(trainer, module)
    if hooks:
        log.info("updates go through Lightning's backward and optimizer step (slower for small problems): the "
                 "direct step would skip %s", ", ".join(hooks))
        return False
    return True


class DirectStep:
    """A LightningOptimizer stepped without the strategy and precision plugin, but counted as a global step."""

    def __init__(self, optimizer: LightningOptimizer) -> None:
        self.wrapped = optimizer

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)

    def step(self, closure=None, **kwargs):
        with lightning_internals.counted_step(self.wrapped):
            return self.wrapped.optimizer.step(closure, **kwargs)
