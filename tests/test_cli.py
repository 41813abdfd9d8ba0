"""The console commands: Hydra's own configuration errors as one line (exit 2), help texts, start-up without the
heavy libraries, the package installed into a fresh prefix and run from another directory, and the command
line a W&B Sweeps agent forms from examples/wandb_sweep.yaml."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fault_log import record
from sip_train import cli

HEAVY = ("torch", "lightning", "scipy", "wandb", "matplotlib")
#: What `pip install .` reads: the build files, the package, its configs and the Hydra plugins.
PACKAGE_FILES = ("pyproject.toml", "setup.py", "README.md", "sip_train", "conf", "hydra_plugins")


def hydra_error(monkeypatch, capsys, *overrides: str) -> str:
    """Run `sip-train <overrides>` in this process; returns stderr, asserting exit status 2 and one line."""
    monkeypatch.setattr(sys, "argv", ["sip-train", *overrides])
    with pytest.raises(SystemExit) as stop:
        cli.train_command()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def test_unknown_option_names_the_group_its_options_and_the_near_miss(monkeypatch, capsys):
    err = hydra_error(monkeypatch, capsys, "problem=poison")
    assert "problem=poison is not an option of problem (did you mean poisson?)" in err
    assert "choose one of exp, fluid, heat, oscillators, poisson, sine, wavepacket" in err
    record("unknown option (Hydra)", "problem=poison on the command line", f"one line, exit 2: {err.strip()[:70]}",
           "nothing (no run directory)")


def test_unknown_key_names_the_keys_of_its_block_without_the_plus_hint(monkeypatch, capsys):
    err = hydra_error(monkeypatch, capsys, "optimizer.lrr=1e-3")
    assert "optimizer has no key 'lrr' (did you mean lr?)" in err and "_target_, eta, inverse, lr" in err
    assert "+optimizer.lrr" not in err
    assert "did you mean problem?" in hydra_error(monkeypatch, capsys, "proble=heat")
    record("unknown key (Hydra)", "optimizer.lrr=1e-3 on the command line",
           f"one line, exit 2, no '+optimizer.lrr' hint: {err.strip()[:60]}", "nothing (no run directory)")


def test_bad_override_syntax_and_a_list_without_multirun_are_one_line(monkeypatch, capsys):
    assert "optimizer.lr==" in hydra_error(monkeypatch, capsys, "optimizer.lr==")
    assert "add --multirun" in hydra_error(monkeypatch, capsys, "optimizer=adam,sip")
    record("bad override syntax (Hydra)", "optimizer.lr== on the command line", "one line naming the override, exit 2",
           "nothing (no run directory)")


def test_sweep_help_lists_the_sweeps_and_prints_the_smoke_test_on_its_own_lines(capsys):
    with pytest.raises(SystemExit):
        cli.sweep_command(["--help"])
    out = capsys.readouterr().out
    assert "named sweeps: exp_methods, fluid_methods, heat_iterative, heat_lr_batch" in out
    lines = out.splitlines()
    smoke = lines.index("  a smoke test, 2 jobs of 20 steps:")
    assert lines[smoke + 1].endswith("trainer.max_steps=20") and lines[smoke + 2].strip() == "hydra.sweep.dir=multirun/smoke"


def test_help_a_config_error_and_sweep_list_import_none_of_the_heavy_libraries(tmp_path):
    """What makes them answer before `import torch` would have finished (timed in BENCHMARKS.md)."""
    probe = ("import sys, runpy\n"
             "for argv in (['train.py', '--help'], ['train.py', 'problem=poison'],\n"
             "             ['train.py', '-m', 'sweep=heat_methods', 'hydra.sweeper.dry_run=true',\n"
             "              'hydra.sweep.dir=" + str(tmp_path) + "']):\n"
             "    sys.argv = argv\n"
             "    try:\n"
             "        runpy.run_path(argv[0], run_name='__main__')\n"
             "    except SystemExit:\n"
             "        pass\n"
             f"print('LOADED', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "LOADED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "optimizer=sip" in result.stdout  # heat_methods' jobs were listed (what `sip-sweep --list` runs)


def pip_install(tmp_path_factory, *options: str) -> tuple[Path, Path, Path]:
    """The package installed with pip into a fresh prefix (no dependencies, no network), from a copy of its files
    (pip builds in the source tree): (prefix, its site-packages, the copy)."""
    prefix, source = tmp_path_factory.mktemp("prefix"), tmp_path_factory.mktemp("source")
    for name in PACKAGE_FILES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--prefix", str(prefix), *options, str(source)], check=True, capture_output=True, timeout=300)
    return prefix, Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)})), source


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install .` into a fresh prefix: (its bin dir, an environment that uses it)."""
    prefix, site, _ = pip_install(tmp_path_factory)
    env = {**os.environ, "PYTHONPATH": str(site), "PATH": f"{prefix / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    return prefix / "bin", env


def test_an_editable_install_finds_the_configs_and_the_sweeper(tmp_path_factory, tmp_path):
    _, site, source = pip_install(tmp_path_factory, "-e")
    probe = (f"import site, sys; site.addsitedir({str(site)!r})\n"  # as the prefix were the environment's own
             "sys.argv = ['sip-train', '-m', 'sweep=heat_methods', 'hydra.sweeper.dry_run=true',\n"
             f"            'hydra.sweep.dir={tmp_path}']\n"
             "from sip_train.cli import train_command\n"
             "print('FROM', sys.modules['sip_train'].__file__)\n"
             "train_command()\n")
    listed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "to run  optimizer=sip" in listed.stdout, listed.stderr[-2000:]
    assert f"FROM {source / 'sip_train' / '__init__.py'}" in listed.stdout  # the editable install's own files


def agent_command(sweep_file, run_config: dict) -> list[str]:
    """The command line a W&B Sweeps agent forms for one run of `sweep_file` (wandb's own helpers, and the
    agent's substitution of its `${...}` macros)."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    spec = yaml.safe_load(sweep_file.read_text())
    macros = create_sweep_command_args({"args": {key: {"value": value} for key, value in run_config.items()}})
    macros.update(env=["/usr/bin/env"], program=[spec["program"]], interpreter=["python"])
    command = []
    for chunk in map(str, create_sweep_command(spec["command"])):
        command += macros.get(chunk[2:-1]) or [] if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return command


def test_installed_commands_run_from_another_directory_as_a_wandb_agent_runs_them(installed, tmp_path):
    bin_dir, env = installed
    assert {"sip-train", "sip-sweep", "sip-eval", "sip-compare"} <= {path.name for path in bin_dir.iterdir()}
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    refused = subprocess.run(["sip-train", "optimizer=sipp"], cwd=outside, env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "did you mean sip?" in refused.stderr
    sweep_file = REPO / "examples" / "wandb_sweep.yaml"
    spec = yaml.safe_load(sweep_file.read_text())
    suggestion = {key: value.get("value", (value.get("values") or [value.get("min")])[0])
                  for key, value in spec["parameters"].items()}  # one run the sweep could suggest, shrunk below
    shrink = {"logger": "csv", "problem.resolution": 8, "network.levels": 2, "trainer.max_steps": 2,
              "trainer.val_check_interval": 2, "data.batch_size": 4, "data.val_size": 4, "figure_examples": 0,
              "trainer.accelerator": "cpu", "hydra.run.dir": str(tmp_path / "run")}
    command = agent_command(sweep_file, {**suggestion, **shrink})
    assert command[:3] == ["/usr/bin/env", "sip-train", "problem=heat"]
    ran = subprocess.run(command, cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["status"], summary["problem"], summary["optimizer"], summary["steps"]) == ("completed", "heat", "sip", 2)
    sources = yaml.safe_load((tmp_path / "run" / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]["config_sources"]
    assert any(source["path"].startswith(str(bin_dir.parent)) for source in sources)  # the installed configs
