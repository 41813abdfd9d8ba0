"""The shipped examples train from their own config folder, added by Hydra's search path."""
from __future__ import annotations

from conftest import REPO
from sip_train.summary import read_summary
from sip_train.run import train

BURGERS = REPO / "examples" / "phiflow_burgers"


def test_phiflow_burgers_trains_with_sip_through_a_generic_inverse(tiny_config, tmp_path):
    """A problem written with PhiFlow's API (only sample and simulate) trains with optimizer=sip: the
    default inverse falls back to Gauss-Newton, with J v by the double vjp (grid_sample has no forward mode).
    The command line equivalent: python train.py --config-dir examples/phiflow_burgers problem=burgers."""
    cfg = tiny_config(f"hydra.searchpath=[file://{BURGERS}]", "problem=burgers", "optimizer=sip",
                      "problem.resolution=8", "network.levels=2", "inverse.iterations=3", "data.val_size=4",
                      "trainer.max_steps=2", "trainer.val_check_interval=2")
    assert cfg.problem._target_ == "examples.phiflow_burgers.burgers.Burgers"
    summary = train(cfg)
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert read_summary(tmp_path)["status"] == "completed"
    assert any((tmp_path / "figures").iterdir())  # figures on: the default figure draws the 2-channel fields
