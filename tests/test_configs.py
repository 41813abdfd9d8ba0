"""Every config composes, and bad choices or values fail at start-up with one clear line."""
from __future__ import annotations

import itertools
import sys

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from conftest import compose_config, options
from sip_train import cli
from sip_train.module import build_components
from sip_train.problems.base import InverseProblem
from sip_train.run import ConfigError, train
from sip_train.summary import read_summary

GROUPS = ["problem", "optimizer", "network", "data", "trainer", "logger"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    for option in options(group):
        cfg = compose_config([f"{group}={option}"])
        assert cfg[group] is not None


def problem_has_fields(problem: str) -> bool:
    cfg = compose_config([f"problem={problem}"])
    return len(instantiate(cfg.problem).x_shape) == 3


#: Problems whose paper-sized Jacobian (batch x dim_y rows, one column per weight) is over HIG's memory budget.
HIG_TOO_LARGE = {"poisson", "heat", "fluid", "wavepacket"}


@pytest.mark.parametrize("problem,optimizer", list(itertools.product(options("problem"), options("optimizer"))))
def test_every_problem_and_rule_build_together_with_a_fitting_network(problem, optimizer):
    network = "unet" if problem_has_fields(problem) else "mlp"
    cfg = compose_config([f"problem={problem}", f"optimizer={optimizer}", f"network={network}"])
    if optimizer == "hig" and problem in HIG_TOO_LARGE:
        with pytest.raises(ValueError, match=r"optimizer=hig needs .* GB for the Jacobian and its SVD"):
            build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
        return
    built_problem, net, rule = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    assert isinstance(built_problem, InverseProblem)
    assert rule.lr == cfg.optimizer.lr


def test_problem_files_set_their_paper_batch_size_which_the_command_line_overrides():
    assert compose_config(["problem=heat"]).data.batch_size == 128
    assert compose_config(["problem=heat", "data.batch_size=32"]).data.batch_size == 32


@pytest.mark.parametrize("group", ["problem", "optimizer", "network"])
def test_an_unknown_choice_lists_the_valid_ones(group):
    with pytest.raises(MissingConfigException) as error:
        compose_config([f"{group}=nonsense"])
    assert f"Could not find '{group}/nonsense'" in str(error.value)
    assert all(option in str(error.value) for option in options(group))


@pytest.mark.parametrize(
    "override,message",
    [
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid: must be a positive number"),
        ("optimizer.lr=0", "optimizer.lr=0 is invalid: must be a positive number"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: must be a positive integer"),
        ("problem.resolution=30", "problem.resolution=30x30 does not fit network=unet with network.levels=4"),
        ("optimizer.proxy_norm=l3", "optimizer.proxy_norm='l3' is invalid: choose one of ['l2', 'l1']"),
    ],
)
def test_a_bad_value_fails_at_start_up_naming_key_and_value(override, message, tiny_config, tmp_path):
    with pytest.raises(ConfigError) as error:
        train(tiny_config(override))
    assert str(error.value).startswith(message)
    assert read_summary(tmp_path)["status"].startswith(f"failed: {message}")


def test_the_command_line_prints_one_error_line_without_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train.py", "logger=csv", f"hydra.run.dir={tmp_path}", "optimizer.lr=-1"])
    with pytest.raises(SystemExit) as stop:
        cli.train_command()
    assert stop.value.code == 2  # sip_train.exit_codes.CONFIG_ERROR
    assert capsys.readouterr().err == "error: optimizer.lr=-1 is invalid: must be a positive number\n"