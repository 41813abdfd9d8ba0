"""sweep.py: named sweeps run through Hydra's launchers, skip finished jobs, survive failing ones,
and end in one table and a set of figures; every paper experiment and sweep file composes."""
from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import sweep as sweep_cli
from conftest import CONF, compose_config, options
from sip_train.module import InverseProblemModule, build_components
from sip_train.sweep import SweepError, expand, load_sweep, plan, run_sweep
from sip_train.sweep.launch import hydra_app, multirun_config, threads_per_job
from sip_train.sweep.report import log_to_wandb, outcome, training_seconds, wandb_settings
from sip_train.sweep.spec import Job, experiment_key, is_completed, render
from train import main as train_job

#: Fixed overrides of a test-sized job: 8x8 heat, 4 steps, validation at steps 0, 2 and 4.
TINY_JOB = {
    "logger": "csv", "problem": "heat", "problem.resolution": 8, "network.levels": 2, "trainer.max_steps": 4,
    "trainer.val_check_interval": 2, "trainer.log_every_n_steps": 1, "trainer.enable_progress_bar": False,
    "data.val_size": 4, "data.val_batch_size": 4, "figure_examples": 0,
}


def write_sweep(path, **content):
    OmegaConf.save(OmegaConf.create(content), path)
    return str(path)


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 2x2 sweep (optimizer x batch size) run in-process with the basic launcher."""
    directory = tmp_path_factory.mktemp("grid")
    spec = write_sweep(directory / "tiny_grid.yaml", grid={"optimizer": ["sip", "adam"], "data.batch_size": [2, 4],
                                                           "threads": 1, **TINY_JOB},
                       tail=0.5, plots={"grid": {"rows": "optimizer", "cols": "data.batch_size"},
                                        "versus": {"x": "data.batch_size", "hue": ["optimizer"]}})
    sweep_dir = directory / "out"
    return spec, sweep_dir, run_sweep(spec, [f"hydra.sweep.dir={sweep_dir}"], train_job)


def test_a_grid_sweep_gives_one_table_row_per_job_and_the_figures(grid_sweep):
    _, sweep_dir, result = grid_sweep
    table = pd.read_csv(sweep_dir / "results.csv")
    assert len(table) == 4 and sorted(result["launched"]) == sorted(table["run_dir"])
    assert set(zip(table["optimizer"], table["data.batch_size"])) == {("sip", 2), ("sip", 4), ("adam", 2), ("adam", 4)}
    assert (table["status"] == "completed").all() and (table["steps"] == 4).all()
    for _, row in table.iterrows():
        summary = OmegaConf.load(sweep_dir / row["run_dir"] / "summary.json")
        assert row["x_l1"] == pytest.approx(summary["x_l1"])
        assert row["best_x_l1"] <= row["x_l1"] and row["tail_x_l1"] > 0
    markdown = (sweep_dir / "results.md").read_text().splitlines()
    assert sum(line.startswith("| sip") or line.startswith("| adam") for line in markdown) == 4
    curves = pd.read_csv(sweep_dir / "curves.csv")
    for _, points in curves.groupby("job"):
        assert points["step"].tolist() == [0, 2, 4]
        assert np.all(np.diff(points["time_s"]) > 0)  # training wall-clock grows with the steps
    for name in ("learning_curves", "curve_grid", "versus"):
        assert (sweep_dir / f"{name}.png").stat().st_size > 10_000


def test_a_rerun_runs_only_the_job_whose_result_was_deleted(grid_sweep):
    spec, sweep_dir, first = grid_sweep
    deleted = first["jobs"][1].name
    (sweep_dir / deleted / "summary.json").unlink()
    others = {job.name: os.stat(sweep_dir / job.name / "summary.json").st_mtime_ns
              for job in first["jobs"] if job.name != deleted}
    again = run_sweep(spec, [f"hydra.sweep.dir={sweep_dir}"], train_job)
    assert again["launched"] == [deleted]
    assert {name: os.stat(sweep_dir / name / "summary.json").st_mtime_ns for name in others} == others
    assert (again["table"]["status"] == "completed").all()
    assert run_sweep(spec, [f"hydra.sweep.dir={sweep_dir}"], train_job)["launched"] == []


def test_a_failing_and_a_diverging_job_are_recorded_and_the_others_complete(tmp_path):
    spec = write_sweep(tmp_path / "failing.yaml", grid={"data.batch_size": 2, "threads": 1, **TINY_JOB}, list=[
        {"optimizer": "adam", "optimizer.lr": -1.0},         # rejected at start-up
        {"optimizer": "sgd", "optimizer.lr": 1.0e30},        # non-finite after one step
        {"optimizer": "adam", "optimizer.lr": 1.0e-3},
    ])
    result = run_sweep(spec, [f"hydra.sweep.dir={tmp_path / 'out'}"], train_job)
    table = result["table"].set_index("optimizer.lr")
    assert len(result["launched"]) == 3
    assert table.loc[-1.0, "status"] == "failed"
    assert table.loc[-1.0, "error"].startswith("optimizer.lr=-1.0 is invalid")
    assert table.loc[1.0e30, "status"] == "diverged"
    assert table.loc[1.0e-3, "status"] == "completed" and table.loc[1.0e-3, "steps"] == 4
    assert "| failed |" in result["markdown"].read_text()
    # finished jobs (completed or diverged) are not run again; the failed one is
    assert run_sweep(spec, [f"hydra.sweep.dir={tmp_path / 'out'}"], train_job)["launched"] == [result["jobs"][0].name]


def test_sweep_py_runs_jobs_in_parallel_with_one_thread_each_and_reports_again(tmp_path, capsys):
    spec = write_sweep(tmp_path / "parallel.yaml", grid={"data.batch_size": 2, **TINY_JOB},
                       list=[{"optimizer": "adam"}, {"optimizer": "sip"}])
    arguments = [f"sweep={spec}", f"hydra.sweep.dir={tmp_path / 'out'}"]
    sweep_cli.main([*arguments, "hydra/launcher=joblib_1thread", "hydra.launcher.n_jobs=2"])
    printed = capsys.readouterr().out
    assert "| adam | completed | 4 |" in printed and "| sip | completed | 4 |" in printed
    for job in ("optimizer=adam", "optimizer=sip"):
        assert "threads=1" in OmegaConf.load(tmp_path / "out" / job / ".hydra" / "overrides.yaml")
    (tmp_path / "out" / "results.md").unlink()
    sweep_cli.main([*arguments, "--report-only"])
    assert "| sip | completed | 4 |" in capsys.readouterr().out
    assert (tmp_path / "out" / "results.md").is_file()
    sweep_cli.main([*arguments, "--list"])
    assert capsys.readouterr().out.count("completed  optimizer=") == 2


def test_with_wandb_on_jobs_are_grouped_by_sweep_and_the_report_is_logged(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    spec = write_sweep(tmp_path / "grouped.yaml", grid={"optimizer": ["sip", "adam"], **TINY_JOB})
    with hydra_app() as hydra:
        _, jobs, config = plan(load_sweep(spec), hydra, [f"hydra.sweep.dir={tmp_path}", "logger=wandb"])
    assert all("logger.wandb.group=grouped" in job.overrides for job in jobs)
    figure = tmp_path / "figure.png"
    plt.imsave(figure, np.zeros((4, 4)))
    log_to_wandb(load_sweep(spec), tmp_path, pd.DataFrame({"x_l1": [1.0]}), [figure], wandb_settings(config))
    assert len(list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))) == 1


def test_jobs_are_the_list_entries_crossed_with_the_grid_and_named_by_their_swept_keys():
    from sip_train.sweep.spec import Sweep

    sweep = Sweep(name="s", grid={"seed": [0, 1], "trainer.max_steps": 10},
                  entries=[{"optimizer": ["sip", "adam"]}, {"optimizer": "sgd", "optimizer.lr": 1e-4}])
    jobs = expand(sweep, ["logger=csv", "trainer.max_steps=20"])
    assert [job.name for job in jobs] == [
        "optimizer=sip,seed=0", "optimizer=sip,seed=1", "optimizer=adam,seed=0", "optimizer=adam,seed=1",
        "optimizer=sgd,optimizer.lr=0.0001,seed=0", "optimizer=sgd,optimizer.lr=0.0001,seed=1"]
    assert jobs[-1].overrides == ("optimizer=sgd", "optimizer.lr=0.0001", "seed=1", "logger=csv", "trainer.max_steps=20")
    with pytest.raises(SweepError, match="sweeps \\['seed'\\]: do not override"):
        expand(sweep, ["seed=3"])
    with pytest.raises(SweepError, match="both in `grid` and in `list`"):
        expand(Sweep(name="s", grid={"seed": [0]}, entries=[{"seed": 1}]))
    with pytest.raises(SweepError, match="listed more than once"):
        expand(Sweep(name="s", entries=[{"seed": 1}, {"seed": 1}]))


@pytest.mark.parametrize("value", [1e-3, 3e-12, 128, -1, True, None, "sip", "a b,c=d", [32, 64, 32], "it's"])
def test_values_render_to_overrides_that_hydra_parses_back(value):
    parsed = OverridesParser.create().parse_overrides([f"key={render(value)}"])[0]
    assert parsed.value() == value


def test_outcomes_and_the_training_clock():
    assert outcome(None, "x_l1") == "missing"
    assert outcome({"status": "completed", "x_l1": 3.0}, "x_l1") == "completed"
    assert outcome({"status": "completed", "x_l1": None}, "x_l1") == "diverged"
    assert outcome({"status": "diverged"}, "x_l1") == "diverged"
    assert outcome({"status": "failed: ValueError: boom"}, "x_l1") == "failed"
    assert outcome({"status": "interrupted"}, "x_l1") == "interrupted"
    # step times logged every 10 steps: each one stands for the 10 steps before it
    metrics = pd.DataFrame({"step": [0, 10, 10, 20], "time/step_ms": [np.nan, 5.0, np.nan, 15.0],
                            "val/x_l1": [1.0, np.nan, 0.5, np.nan]})
    seconds = training_seconds(metrics, fallback_ms=None)
    assert seconds(np.array([0, 10, 15, 20, 30])) == pytest.approx([0, 0.05, 0.125, 0.2, 0.35])
    assert training_seconds(metrics.drop(columns="time/step_ms"), fallback_ms=2.0)(np.array([10])) == pytest.approx([0.02])


def test_a_finished_run_of_other_overrides_is_not_taken_for_this_job(tmp_path):
    job = Job("optimizer=sip", {"optimizer": "sip"}, ("optimizer=sip", "trainer.max_steps=10", "threads=1"))
    run_dir = tmp_path / job.name
    (run_dir / ".hydra").mkdir(parents=True)
    assert not is_completed(job, tmp_path)
    (run_dir / "summary.json").write_text('{"status": "failed: boom"}')
    assert not is_completed(job, tmp_path)
    (run_dir / "summary.json").write_text('{"status": "completed", "x_l1": 1.0}')
    OmegaConf.save(OmegaConf.create(["optimizer=sip", "trainer.max_steps=10", "threads=2"]), run_dir / ".hydra" / "overrides.yaml")
    assert is_completed(job, tmp_path)  # threads only change how it ran
    OmegaConf.save(OmegaConf.create(["optimizer=sip", "trainer.max_steps=20"]), run_dir / ".hydra" / "overrides.yaml")
    with pytest.raises(SweepError, match="trainer.max_steps=20"):
        is_completed(job, tmp_path)


def test_experiments_are_chosen_with_the_key_config_yaml_allows(tmp_path, monkeypatch):
    import sip_train.sweep.spec as spec

    monkeypatch.setattr(spec, "CONF", tmp_path)
    (tmp_path / "config.yaml").write_text("defaults:\n  - problem: poisson\n  - _self_\n")
    assert spec.override("experiment", "paper_fig6_heat") == "+experiment=paper_fig6_heat"
    (tmp_path / "config.yaml").write_text("defaults:\n  - problem: poisson\n  - _self_\n  - optional experiment: null\n")
    assert spec.override("experiment", "paper_fig6_heat") == "experiment=paper_fig6_heat"


def _referenced_configs(path):
    """conf/<group>/<option>.yaml files that an experiment's defaults list overrides."""
    defaults = OmegaConf.load(path).get("defaults", [])
    return [CONF / f"{str(next(iter(entry))).split('/')[-1]}/{next(iter(entry.values()))}.yaml"
            for entry in defaults if isinstance(entry, dict) and str(next(iter(entry))).startswith("override /")]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_gives_each_rule_its_paper_learning_rate(experiment):
    missing = [str(p) for p in _referenced_configs(CONF / "experiment" / f"{experiment}.yaml") if not p.is_file()]
    assert not missing, f"experiment={experiment} uses configs that do not exist: {missing}"
    cfg = compose_config([f"{experiment_key()}={experiment}"])
    build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    paper_lr = cfg.get("paper_lr") or {}
    assert set(paper_lr) <= set(options("optimizer"))
    other = next((rule for rule in paper_lr if rule != cfg.optimizer._target_.rsplit(".", 1)[-1].lower()), None)
    if other is not None:
        cfg = compose_config([f"{experiment_key()}={experiment}", f"optimizer={other}"])
        assert build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)[2].lr == paper_lr[other]


@pytest.mark.parametrize("name", options("sweep"))
def test_every_sweep_file_expands_into_jobs_that_compose(name):
    sweep = load_sweep(name)
    jobs = expand(sweep)
    assert len({job.name for job in jobs}) == len(jobs) > 1
    covered: set[str] = set()
    for job in jobs:  # compose jobs until every swept key and every swept config-group option is used
        uses = {f"{key}={value}" if (CONF / key).is_dir() else key for key, value in job.params.items()}
        if uses - covered:
            cfg = compose_config(list(job.overrides))
            build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
            covered |= uses
    for axis in ("rows", "cols"):
        key = sweep.plots.get("grid", {}).get(axis)
        assert key is None or key in sweep.swept_keys
    assert sweep.plots.get("versus", {}).get("x", sweep.swept_keys[0]) in sweep.swept_keys


def test_the_launcher_configs_set_parallel_jobs_and_threads(tmp_path):
    with hydra_app() as hydra:
        joblib = multirun_config(hydra, tmp_path, ["hydra/launcher=joblib_1thread", "hydra.launcher.n_jobs=4"])
        slurm = multirun_config(hydra, tmp_path, ["hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu"])
    assert joblib.hydra.launcher._target_.endswith("JoblibLauncher") and joblib.hydra.launcher.n_jobs == 4
    assert threads_per_job(joblib) == 1
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
    assert threads_per_job(slurm) == slurm.hydra.launcher.cpus_per_task


def test_the_optuna_sweeper_config_composes_when_the_optional_extra_is_installed(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -r requirements-optuna.txt")
    with hydra_app() as hydra:
        config = multirun_config(hydra, tmp_path, ["hydra/sweeper=optuna_lr"])
    assert config.hydra.sweeper.direction == "minimize" and "optimizer.lr" in config.hydra.sweeper.params


def test_an_experiment_learning_rate_reaches_the_trained_module(tiny_config):
    cfg = tiny_config(f"{experiment_key()}=paper_fig6_heat", "optimizer=sgd")
    module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, 0)
    assert module.rule.lr == 2.0e-6


def test_a_sweep_name_that_does_not_exist_lists_the_sweeps():
    with pytest.raises(SweepError, match="heat_lr_batch"):
        load_sweep("nonsense")
