"""trainer.precision: 64-true trains (several updates per step included); under bf16-mixed only the network runs
under autocast, the physics and the metrics in the problem's own dtype."""
from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch import Trainer
from torch import nn

from conftest import TINY, TINY_PROBLEM, compose_config, options
from fault_log import record
from sip_train.module import InverseProblemModule
from sip_train.run import train

POISSON = ["problem=poisson", "problem.resolution=16", "figure_examples=0"]


@pytest.mark.parametrize("problem", options("problem"))
def test_every_problem_trains_in_float64(problem, tiny_config, tmp_path):
    """The network's input, every batch of several updates per step, the physics and the metrics in float64."""
    summary = train(tiny_config(f"problem={problem}", *TINY_PROBLEM.get(problem, []), "optimizer=adam",
                                "trainer.precision=64-true", "updates_per_step=2", "trainer.max_steps=2",
                                "data.val_size=4", "figure_examples=0"))
    assert summary["status"] == "completed" and summary["steps"] == 2 and math.isfinite(summary["y_l2"])
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(value.dtype == torch.float64 for value in state.values() if value.is_floating_point())
    record("float64 training", f"trainer.precision=64-true problem={problem} updates_per_step=2",
           "trains to the end, finite metrics", "nothing")


class Oracle(nn.Module):
    """A "network" that answers the true x* for each observation y* of a fixed set (found by equality)."""

    def __init__(self, x_true: torch.Tensor, y_target: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("x_true", x_true)
        self.register_buffer("y_target", y_target.flatten(1))
        self.unused = nn.Parameter(torch.zeros(1))  # Lightning wants something to optimise

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        index = (y.flatten(1)[:, None] == self.y_target[None]).all(-1).float().argmax(1)
        return self.x_true[index]


def test_under_bf16_mixed_the_physics_at_the_true_solution_give_zero_observation_error():
    """Autocast over the spectral Poisson solve made y_l2 at x* about 0.75; with the physics out of autocast it
    is 0, as in 32-bit."""
    cfg = compose_config([*TINY, *POISSON])
    module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, 0)
    data = instantiate(cfg.data, problem=module.problem, seed=cfg.seed)
    module.network = Oracle(*data.validation_set(torch.device("cpu")))
    trainer = Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", logger=False, enable_progress_bar=False,
                      enable_model_summary=False)
    [metrics] = trainer.validate(module, datamodule=data, verbose=False)
    assert metrics["val/x_l1"] == 0 and metrics["val/y_l2"] == 0
