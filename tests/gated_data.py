"""`data._target_=gated_data.GatedData +data.gate=PATH +data.gate_step=N`: the synthetic data of a run whose
training batch of step N waits, once, until the file PATH exists, saying so by creating PATH.waiting.<pid of
its process>. A test signals that process while it waits and then opens the gate: the signal arrives during a
known step, with nothing left to timing. The batches are those of `SyntheticData`."""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from sip_train.data import SyntheticData
from sip_train.problems.base import Batch


class GatedData(SyntheticData):
    def __init__(self, problem, gate: str, gate_step: int, **options) -> None:
        super().__init__(problem, **options)
        self.gate, self.gate_step = Path(gate), gate_step

    def train_batch(self, step: int, device: torch.device, rank: int = 0) -> Batch:
        if step == self.gate_step and not self.gate.exists():
            Path(f"{self.gate}.waiting.{os.getpid()}").touch()
            while not self.gate.exists():
                time.sleep(0.01)
        return super().train_batch(step, device, rank)
