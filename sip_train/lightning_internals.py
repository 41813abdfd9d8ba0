"""The Lightning internals the fast path relies on, all here: counting an optimizer step made outside
Lightning's strategy as a global step, and counting extra updates of one Lightning step as batches.

Lightning has no public API for either. `missing(trainer, optimizer)` names whatever of them a Lightning
version lacks; the fast path refuses to start without them, and a test checks them on every run.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from lightning.pytorch import Trainer
from lightning.pytorch.core.optimizer import LightningOptimizer

#: What is used, as attribute paths from the LightningOptimizer and from the Trainer.
OPTIMIZER_ATTRIBUTES = ("_on_before_step", "_on_after_step", "optimizer")
PROGRESS_COUNTERS = ("ready", "started", "processed", "completed")
TRAINER_ATTRIBUTES = ("fit_loop.epoch_loop.batch_progress.total", "fit_loop.epoch_loop.batch_progress.current",
                      "fit_loop.epoch_loop._batches_that_stepped")


def _lookup(owner: object, path: str) -> object:
    for name in path.split("."):
        owner = getattr(owner, name)
    return owner


def missing(trainer: Trainer, optimizer: LightningOptimizer) -> list[str]:
    """The attributes of this list that the installed Lightning does not have (empty when all are there)."""
    paths = [*(f"LightningOptimizer.{name}" for name in OPTIMIZER_ATTRIBUTES),
             *(f"Trainer.{path}" for path in TRAINER_ATTRIBUTES),
             *(f"Trainer.{path}.{counter}" for path in TRAINER_ATTRIBUTES[:2] for counter in PROGRESS_COUNTERS)]
    owners = {"LightningOptimizer": optimizer, "Trainer": trainer}
    absent = []
    for path in paths:
        owner, _, rest = path.partition(".")
        try:
            _lookup(owners[owner], rest)
        except AttributeError:
            absent.append(path)
    return absent


def require(trainer: Trainer, optimizer: LightningOptimizer) -> None:
    """Fail, naming them, if the installed Lightning lacks what the fast path relies on."""
    absent = missing(trainer, optimizer)
    if absent:
        raise RuntimeError(f"this Lightning version has no {', '.join(absent)}, which sip_train's fast path relies "
                           "on; install the Lightning version of requirements.txt or update sip_train/lightning_internals.py")


@contextmanager
def counted_step(optimizer: LightningOptimizer) -> Iterator[None]:
    """An optimizer step made outside Lightning's strategy, counted as one (a global step) as
    `LightningOptimizer.step` counts its own."""
    optimizer._on_before_step()
    yield
    optimizer._on_after_step()


def count_as_batches(trainer: Trainer, extra: int) -> None:
    """Count `extra` updates made inside one Lightning step as batches, so that Lightning's schedules of logging
    and validation, and the counters saved in checkpoints, stay in updates."""
    loop = trainer.fit_loop.epoch_loop
    for counter in (loop.batch_progress.total, loop.batch_progress.current):
        for name in PROGRESS_COUNTERS:
            setattr(counter, name, getattr(counter, name) + extra)
    loop._batches_that_stepped += extra
