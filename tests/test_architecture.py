"""The house plan of docs/architecture.md, checked on the source: no import circles in sip_train, and
each layer imports only the layers below it; the shells are imported by nobody."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sip_train"

#: Which sip_train modules a layer must never import (physics never imports problems, problems never import
#: rules, rules never import the LightningModule or its helpers, nothing imports the shells; the leaves import
#: nothing of sip_train).
#: The LightningModule's helpers, one job each.
MODULE_HELPERS = ("sip_train.components", "sip_train.fast_path", "sip_train.lightning_internals",
                  "sip_train.compiled", "sip_train.physics_precision", "sip_train.training_log",
                  "sip_train.validation_figures")
FORBIDDEN = {
    "sip_train.physics": ("sip_train.problems", "sip_train.inverse", "sip_train.rules", "sip_train.module",
                          "sip_train.run", "sip_train.networks"),
    "sip_train.networks": ("sip_train.problems", "sip_train.inverse", "sip_train.rules", "sip_train.module",
                           "sip_train.run"),
    "sip_train.problems": ("sip_train.inverse", "sip_train.rules", "sip_train.module", "sip_train.run"),
    "sip_train.inverse": ("sip_train.rules", "sip_train.module", "sip_train.run", "sip_train.networks"),
    "sip_train.rules": ("sip_train.module", "sip_train.run", *MODULE_HELPERS),
    "sip_train.report_format": ("sip_train.",),
    **{helper: ("sip_train.module", "sip_train.run") for helper in MODULE_HELPERS},
    "sip_train.values": ("sip_train.",),
    "sip_train.lightning_internals": ("sip_train.",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """The sip_train modules a file imports, at any depth of the file (lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sip_train"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if (PACKAGE.parent / f"{node.module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("sip_train"))
    return found


GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_sip_train_has_no_import_circles():
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for imported in sorted(GRAPH.get(module, ())):
            if imported not in GRAPH or imported == module:
                continue
            if state.get(imported) == "open":
                pytest.fail("import circle: " + " -> ".join([*trail[trail.index(imported):], imported]))
            if imported not in state:
                visit(imported, [*trail, imported])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_imports_only_the_layers_below_it(layer):
    offences = [f"{module} imports {imported}" for module, imported_set in GRAPH.items()
                if module == layer or module.startswith(layer + ".")
                for imported in imported_set if imported.startswith(FORBIDDEN[layer])]
    assert not offences, offences


def test_no_package_module_imports_the_shells():
    """(That nothing imports Hydra's internals is checked in test_sweep.py, over every source file.)"""
    for path in [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "hydra_plugins").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not names & {"train", "sweep"}, path
