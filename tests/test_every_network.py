"""Every network with every problem, both discovered from conf/: it trains a step with figures on,
or it is refused at start-up with one line naming the network (shapes it cannot map)."""
from __future__ import annotations

import itertools

import pytest
from hydra.utils import instantiate

from conftest import compose_config, options
from sip_train.run import ConfigError, train

#: Test sizes for every network option (a key the network does not have is simply not set).
SMALL_NETWORK = {"levels": 2, "modes": 4, "width": 8}
#: Test sizes for every problem option.
SMALL_PROBLEM = {"resolution": 16, "steps": 16}


def small(group: str, option: str, sizes: dict[str, int]) -> list[str]:
    """Overrides shrinking `group=option` to test size, from the keys its config actually has."""
    block = compose_config([f"{group}={option}"])[group]
    return [f"{group}.{key}={value}" for key, value in sizes.items() if key in block]


@pytest.mark.parametrize("problem,network", list(itertools.product(options("problem"), options("network"))))
def test_every_network_trains_every_problem_whose_shapes_it_fits(problem, network, tiny_config, tmp_path):
    cfg = tiny_config(f"problem={problem}", f"network={network}", "optimizer=adam", "trainer.max_steps=1",
                      "trainer.val_check_interval=1", "validate_at_start=false", "data.val_size=4", "figure_examples=2",
                      *small("problem", problem, SMALL_PROBLEM), *small("network", network, SMALL_NETWORK))
    try:
        summary = train(cfg)
    except ConfigError as refusal:  # a network that cannot map these shapes says so in one line
        assert str(refusal).startswith(f"network={network}") and "\n" not in str(refusal)
        problem_obj = instantiate(cfg.problem)
        assert f"input {tuple(problem_obj.y_shape)}" in str(refusal)  # it names the shapes it was given
        return
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert sorted(p.name for p in (tmp_path / "figures").glob("*.png")) == ["learning_curves.png", "val_step0000001.png"]
