"""`python tests/ddp_probe.py RUN_DIR OVERRIDE...`: train() under DDP, each rank leaving its final weights and
its first training batch in RUN_DIR/rank<N>.pt (for test_ddp.py). NAN_AT_STEP=k makes rank 1 alone report a
non-finite loss at step k (a rank mismatch). Lightning relaunches this same command for the other ranks."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sip_train.config import compose_config
from sip_train.module import InverseProblemModule
from sip_train.run import train

run_dir, overrides = Path(sys.argv[1]), sys.argv[2:]
first_batch: dict[int, torch.Tensor] = {}
training_step = InverseProblemModule.training_step


def probed_training_step(self, batch, batch_idx):
    first_batch.setdefault(self.global_rank, batch[1].clone())
    result = training_step(self, batch, batch_idx)
    if self.global_rank == 1 and self.global_step == int(os.environ.get("NAN_AT_STEP", "-1")):
        result["loss"] = torch.full_like(result["loss"], float("nan"))
    return result


def on_train_end(self):
    torch.save({"weights": self.network.state_dict(), "first_batch": first_batch[self.global_rank]},
               run_dir / f"rank{self.global_rank}.pt")


InverseProblemModule.training_step = probed_training_step
InverseProblemModule.on_train_end = on_train_end
sys.exit(train(compose_config(overrides, run_dir))["exit_code"])
