"""Synthetic data generated on the training device: an infinite (or finite) training stream and a
fixed validation set.

The data loaders only hand out integers; `on_after_batch_transfer` turns them into batches on
the device the model lives on, so a GPU run never waits for CPU workers. Every training batch
is a pure function of (seed, rank, global step), so a resumed run continues the same stream
and each DDP rank draws distinct samples.
"""
from __future__ import annotations

import copy
import itertools
from typing import Iterator

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from sip_train.problems.base import Batch, InverseProblem, batch_rows, batch_to

TRAIN_STREAM, VALIDATION_STREAM, TRAIN_SET_STREAM, SHUFFLE_STREAM = range(4)


def stream_generator(device: torch.device, *key: int) -> torch.Generator:
    """A generator on `device` seeded from an integer key (seed, stream, ...), well mixed."""
    seed = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


class _Counter(IterableDataset):
    """0, 1, 2, ... forever (or `length` items): placeholders turned into batches after transfer."""

    def __init__(self, length: int | None = None) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return itertools.count() if self.length is None else iter(range(self.length))


class SyntheticData(LightningDataModule):
    """Infinite or finite synthetic training data and a fixed validation set for one problem.

    Args:
        problem: the problem whose `sample` generates the batches (x*, y*, and its observed inputs if any).
        batch_size: training examples per step.
        val_size: validation examples (a fixed set, drawn from its own random stream).
        val_batch_size: validation examples per forward pass.
        train_size: None for fresh samples every step, or N for a fixed training set of N
            examples, cycled in a new random order each pass (tiled when batch_size > N).
        seed: base seed of all data streams.
        steps_per_draw: fresh samples only: the batches of this many consecutive steps
            (k * steps_per_draw, ...) come from one `problem.sample` call, so small problems pay its
            fixed cost once per draw. Each step still has its own batch, a pure function of (seed,
            rank, step, steps_per_draw); 1 draws each step's batch alone.
    """

    def __init__(
        self,
        problem: InverseProblem,
        batch_size: int = 128,
        val_size: int = 128,
        val_batch_size: int = 128,
        train_size: int | None = None,
        seed: int = 0,
        steps_per_draw: int = 1,
    ) -> None:
        super().__init__()
        for key, value in (("data.batch_size", batch_size), ("data.val_size", val_size),
                           ("data.val_batch_size", val_batch_size), ("data.train_size", train_size),
                           ("data.steps_per_draw", steps_per_draw)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key}={value!r} is invalid: must be a positive integer")
        self.problem = problem
        self.batch_size = batch_size
        self.val_size = val_size
        self.val_batch_size = min(val_batch_size, val_size)
        self.train_size = train_size
        self.seed = seed
        self.steps_per_draw = steps_per_draw
        self._cache: dict[tuple[str, torch.device], Batch] = {}
        self._draw: tuple[tuple[int, torch.device, int], Batch] | None = None
        self._orders: dict[tuple[int, torch.device, int], torch.Tensor] = {}  # finite set: (pass, device, rank)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Counter(), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Counter(-(-self.val_size // self.val_batch_size)), batch_size=None)

    def on_after_batch_transfer(self, batch: int, dataloader_idx: int) -> Batch:
        device = self.trainer.strategy.root_device
        if self.trainer.training:
            return self.train_batch(self.trainer.global_step, device, self.trainer.global_rank)
        start = batch * self.val_batch_size
        return batch_rows(self.validation_set(device), slice(start, start + self.val_batch_size))

    def train_batch(self, step: int, device: torch.device, rank: int = 0) -> Batch:
        """The training batch of a global step (a pure function of seed, rank, step and steps_per_draw)."""
        if self.train_size is None and self.steps_per_draw == 1:
            return self.problem.sample(self.batch_size, stream_generator(device, self.seed, TRAIN_STREAM, rank, step))
        if self.train_size is None:
            draw, position = divmod(step, self.steps_per_draw)
            if self._draw is None or self._draw[0] != (draw, device, rank):
                generator = stream_generator(device, self.seed, TRAIN_STREAM, rank, draw, self.steps_per_draw)
                self._draw = (draw, device, rank), self.problem.sample(self.batch_size * self.steps_per_draw, generator)
            rows = slice(position * self.batch_size, (position + 1) * self.batch_size)
            return batch_rows(self._draw[1], rows)
        positions = torch.arange(step * self.batch_size, (step + 1) * self.batch_size, device=device)
        first, last = step * self.batch_size // self.train_size, ((step + 1) * self.batch_size - 1) // self.train_size
        orders = torch.stack([self._order(p, device, rank) for p in range(first, last + 1)])
        index = orders[positions // self.train_size - first, positions % self.train_size]
        return batch_rows(self._fixed_set("train", device), index)

    def _order(self, epoch: int, device: torch.device, rank: int) -> torch.Tensor:
        """The shuffled order of the finite training set in pass `epoch`, drawn on the CPU (the same on any
        device) and copied to `device` once per pass, from pinned memory so the host does not wait."""
        key = (epoch, device, rank)
        if key not in self._orders:
            generator = stream_generator(torch.device("cpu"), self.seed, SHUFFLE_STREAM, rank, epoch)
            order = torch.randperm(self.train_size, generator=generator)
            order = order.pin_memory() if device.type == "cuda" else order
            self._orders = {k: v for k, v in self._orders.items() if k[0] >= epoch - 1}  # a step spans few passes
            self._orders[key] = order.to(device, non_blocking=True)
        return self._orders[key]

    def validation_set(self, device: torch.device) -> Batch:
        """The fixed validation examples (x*, y*, *observed), drawn once on the CPU from their own stream,
        cached per device."""
        return self._fixed_set("validation", device)

    def _fixed_set(self, name: str, device: torch.device) -> Batch:
        if (name, device) not in self._cache:
            size, stream = (self.val_size, VALIDATION_STREAM) if name == "validation" else (self.train_size, TRAIN_SET_STREAM)
            # Drawn (and simulated) on the CPU, then moved: the same examples whatever the device and device count.
            cpu = torch.device("cpu")
            problem = self.problem if all(b.device == cpu for b in self.problem.buffers()) else copy.deepcopy(self.problem).to(cpu)
            with torch.inference_mode(False):  # cached beyond the (inference-mode) validation pass
                self._cache[name, device] = batch_to(problem.sample(size, stream_generator(cpu, self.seed, stream)),
                                                     device)
        return self._cache[name, device]
