"""The fast path (direct backward and optimizer step): taken only when no hook it would skip is overridden, the
same updates as Lightning's path, and the Lightning internals it relies on named when an upgrade removes them."""
from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.core.optimizer import LightningOptimizer

from conftest import TINY, compose_config
from sip_train import fast_path, lightning_internals
from sip_train.module import InverseProblemModule

STEPS = 4


class OptimizerStepCounter(Callback):
    """A callback of the kind a user adds later: it looks at every optimizer step."""

    def __init__(self) -> None:
        self.calls = 0

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.calls += 1


def fit(*callbacks: Callback, updates_per_step: int = 1) -> InverseProblemModule:
    """A few adam steps on exp with Lightning's defaults (one CPU device, 32-bit), these callbacks added."""
    cfg = compose_config([*TINY, "problem=exp", "optimizer=adam"])
    module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, 0, False, updates_per_step)
    data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
    trainer = Trainer(accelerator="cpu", devices=1, max_steps=STEPS, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                      callbacks=list(callbacks))
    trainer.fit(module, datamodule=data)
    return module


@pytest.fixture
def direct_steps(monkeypatch) -> list[int]:
    """Counts the optimizer steps taken by the fast path."""
    calls: list[int] = []
    original = fast_path.DirectStep.step

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(fast_path.DirectStep, "step", counting)
    return calls


@pytest.mark.parametrize("updates_per_step", [1, 2])
def test_a_callback_on_the_optimizer_step_is_called_and_the_updates_are_those_of_the_fast_path(
        updates_per_step, direct_steps, caplog):
    """With the callback every update goes through Lightning (the callback sees each one, the run says why
    once); without it the fast path makes the same updates to the bit."""
    counter = OptimizerStepCounter()
    with caplog.at_level(logging.INFO, logger="sip_train.fast_path"):
        through_lightning = fit(counter, updates_per_step=updates_per_step)
    assert counter.calls == STEPS and not direct_steps
    reasons = [r.getMessage() for r in caplog.records if r.name == "sip_train.fast_path"]
    assert reasons == ["updates go through Lightning's backward and optimizer step (slower for small problems): the "
                       "direct step would skip OptimizerStepCounter.on_before_optimizer_step"]
    direct = fit(updates_per_step=updates_per_step)
    assert len(direct_steps) == STEPS
    for a, b in zip(through_lightning.network.parameters(), direct.network.parameters()):
        assert torch.equal(a, b)


def _trainer_and_optimizer() -> tuple[Trainer, LightningOptimizer]:
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer, LightningOptimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0))


def test_the_installed_lightning_has_every_internal_the_fast_path_relies_on():
    trainer, optimizer = _trainer_and_optimizer()
    missing = lightning_internals.missing(trainer, optimizer)
    assert not missing, f"Lightning no longer has {missing}: update sip_train/lightning_internals.py"


def test_a_removed_internal_is_named():
    trainer, optimizer = _trainer_and_optimizer()
    del trainer.fit_loop.epoch_loop._batches_that_stepped
    with pytest.raises(RuntimeError, match=r"this Lightning version has no "
                                           r"Trainer\.fit_loop\.epoch_loop\._batches_that_stepped, which"):
        lightning_internals.require(trainer, optimizer)
