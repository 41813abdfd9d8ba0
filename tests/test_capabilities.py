"""What rules and inverse solvers declare (double backward, one process only, full precision, vectorisable,
differentiates the physics twice, the solver's name) and what reads it: the start-up checks, compile=true and
inverse=auto. No code tests for a concrete rule or solver class outside the file that defines it."""
from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.utils import instantiate

from conftest import compose_config, options
from sip_train.components import build_components
from sip_train.startup import check_combinations

PACKAGE = Path(__file__).resolve().parents[1] / "sip_train"

#: Rules that train as a vectorised ensemble, and those that cannot (their own step, a double backward).
VECTORIZABLE = {"sgd", "adam", "adadelta", "adagrad", "rmsprop", "sip", "normalized"}
NOT_VECTORIZABLE = {"hig", "adahessian", "hessian_free"}


def rule(name: str, *overrides: str):
    return instantiate(compose_config([f"optimizer={name}", *overrides]).optimizer)


def test_every_rule_is_sorted_as_vectorizable_or_not():
    assert set(options("optimizer")) == VECTORIZABLE | NOT_VECTORIZABLE
    assert {name for name in options("optimizer") if rule(name).vectorizable} == VECTORIZABLE


@pytest.mark.parametrize("name, double_backward, single_process, full_precision", [
    ("adam", False, False, False), ("adahessian", True, False, False), ("hessian_free", True, True, True),
    ("hig", False, True, False), ("sip", False, False, False)])
def test_rules_declare_what_they_need(name, double_backward, single_process, full_precision):
    built = rule(name)
    assert (built.needs_double_backward, built.single_process, built.needs_full_precision) == (
        double_backward, single_process, full_precision)
    assert built.updates_by_loss == (name in {"adam", "sip"})


@pytest.mark.parametrize("problem, inverse, name, twice", [
    ("poisson", "auto", "auto: problem", False), ("wavepacket", "auto", "auto: gauss_newton", True),
    ("exp", "gauss_newton", "gauss_newton", True), ("exp", "lbfgs", "lbfgs", False),
    ("exp", "problem", "problem", False)])
def test_a_sip_rule_takes_its_declarations_and_name_from_the_solver_it_uses(problem, inverse, name, twice):
    """inverse=auto says, once it has seen the problem, which solver it picked."""
    cfg = compose_config([f"problem={problem}", "optimizer=sip", f"inverse={inverse}", "problem.resolution=8"]
                         if problem == "poisson" else [f"problem={problem}", "optimizer=sip", f"inverse={inverse}"])
    _, _, sip = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    assert sip.inverse.name == name
    assert sip.differentiates_physics_twice == sip.inverse.differentiates_physics_twice == twice
    assert sip.vectorizable


@pytest.mark.parametrize("name, message", [
    ("hig", "optimizer=hig is invalid with 2 processes (DDP): it trains on one device only"),
    ("hessian_free", "optimizer=hessian_free is invalid with 2 processes (DDP): it trains on one device only"),
    ("adahessian", "optimizer=adahessian is invalid with 2 processes (DDP): its double backward")])
def test_one_start_up_check_refuses_several_processes_for_what_a_rule_declares(name, message):
    cfg = compose_config(["problem=exp", f"optimizer={name}"])
    problem, network, built = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    two_processes = SimpleNamespace(world_size=2, precision="32-true")
    with pytest.raises(ValueError, match=re.escape(message)):
        check_combinations(cfg, problem, network, built, two_processes)
    check_combinations(cfg, problem, network, built, SimpleNamespace(world_size=1, precision="32-true"))


def _concrete_classes() -> dict[str, Path]:
    """Rule and solver classes (not the base classes) -> the file that defines them."""
    found = {}
    for folder in ("rules", "inverse"):
        for path in (PACKAGE / folder).glob("*.py"):
            if path.name == "base.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    found[node.name] = path
    return found


def test_no_code_tests_for_a_concrete_rule_or_solver_class_outside_its_own_file():
    classes = _concrete_classes()
    offences = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("isinstance", "issubclass"):
                tested = node.args[1]
                names = [element.id for element in getattr(tested, "elts", [tested]) if isinstance(element, ast.Name)]
                offences += [f"{path.relative_to(PACKAGE)}: {name}" for name in names
                             if name in classes and classes[name] != path]
    assert not offences, offences
