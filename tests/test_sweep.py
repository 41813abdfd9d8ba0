"""Named sweeps through the `sip` sweeper plugin (train.py -m sweep=NAME and sweep.py): jobs run
through Hydra's launchers, finished jobs are skipped, failing ones are recorded, the command line
can shrink a sweep, and a sweep ends in one table and titled figures; every paper experiment and
sweep file composes."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import runpy
import sys

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from hydra.types import RunMode
from omegaconf import OmegaConf

import sweep as sweep_cli
from conftest import CONF, REPO, compose_config, options, write_sweep
from fault_log import record
from wandb_files import finished_run_records
from hydra_plugins.sip_sweeper.sip_sweeper import cartesian
from sip_train.module import InverseProblemModule, build_components
from sip_train.sweep.figures import curve_grid, job_label, learning_curves, versus
from sip_train.sweep.report import report
from sip_train.summary import read_summary
from sip_train.sweep.results import collect, outcome, training_seconds
from sip_train.sweep.spec import Job, Sweep, SweepError, expand, job_state, load_plan, plan, render
from sip_train.sweep.wandb_upload import log_to_wandb

#: Fixed values of a test-sized job: 8x8 heat, 4 steps, validation at steps 0, 2 and 4.
TINY_JOB = {
    "logger": "csv", "problem": "heat", "problem.resolution": 8, "network.levels": 2, "trainer.max_steps": 4,
    "trainer.val_check_interval": 2, "trainer.log_every_n_steps": 1, "trainer.enable_progress_bar": False,
    "trainer.accelerator": "cpu", "data.val_size": 4, "data.val_batch_size": 4, "figure_examples": 0,
}


def multirun(monkeypatch, *overrides):
    """`python train.py <overrides>` in this process (no -m needed: a sweep file makes it a multirun). The
    logging handlers Hydra adds for it are removed afterwards: they write to this test's captured output,
    which pytest closes when the test ends."""
    monkeypatch.setattr(sys, "argv", [str(REPO / "train.py"), *overrides])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def summary_times(sweep_dir):
    return {path.parent.name: os.stat(path).st_mtime_ns for path in sweep_dir.glob("*/summary.json")}


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 2x2 sweep (optimizer x batch size) run in-process with the basic launcher, and its report."""
    directory = tmp_path_factory.mktemp("grid")
    arguments = [*write_sweep(directory / "conf", "tiny_grid",
                              grid={"optimizer": ["sip", "adam"], "data.batch_size": [2, 4], "threads": 1, **TINY_JOB},
                              tail=0.5, plots={"grid": {"rows": "optimizer", "cols": "data.batch_size"},
                                               "versus": {"x": "data.batch_size", "hue": ["optimizer"]}}),
                 f"hydra.sweep.dir={directory / 'out'}"]
    with pytest.MonkeyPatch.context() as monkeypatch:
        multirun(monkeypatch, *arguments)
    return arguments, directory / "out", report(directory / "out")


def test_a_grid_sweep_gives_one_table_row_per_job_and_the_figures(grid_sweep):
    _, sweep_dir, result = grid_sweep
    table = pd.read_csv(sweep_dir / "results.csv")
    assert len(table) == 4 and sorted(job.name for job in result["jobs"]) == sorted(table["run_dir"])
    assert set(zip(table["optimizer"], table["data.batch_size"])) == {("sip", 2), ("sip", 4), ("adam", 2), ("adam", 4)}
    assert (table["status"] == "completed").all() and (table["steps"] == 4).all()
    for _, row in table.iterrows():
        summary = OmegaConf.load(sweep_dir / row["run_dir"] / "summary.json")
        assert row["x_l1"] == pytest.approx(summary["x_l1"])
        assert row["best_x_l1"] <= row["x_l1"] and row["tail_x_l1"] > 0
        if "exit_code" in summary:  # written by train(cfg) since exit codes exist
            assert row["exit_code"] == summary["exit_code"] == 0
    markdown = (sweep_dir / "results.md").read_text().splitlines()
    assert sum(line.startswith("| sip") or line.startswith("| adam") for line in markdown) == 4
    curves = pd.read_csv(sweep_dir / "curves.csv")
    for _, points in curves.groupby("job"):
        assert points["step"].tolist() == [0, 2, 4]
        assert np.all(np.diff(points["time_s"]) > 0)  # training wall-clock grows with the steps
    for name in ("learning_curves", "curve_grid", "versus"):
        assert (sweep_dir / f"{name}.png").stat().st_size > 10_000


def test_jobs_run_in_directories_named_by_their_swept_values(grid_sweep):
    _, sweep_dir, result = grid_sweep
    sweep, jobs, _ = load_plan(sweep_dir)
    assert sweep.name == "tiny_grid" and [job.name for job in jobs] == [job.name for job in result["jobs"]]
    for job in jobs:
        hydra = OmegaConf.load(sweep_dir / job.name / ".hydra" / "hydra.yaml").hydra
        assert hydra.job.override_dirname == ",".join(sorted(f"{key}={value}" for key, value in job.params.items()))
        assert hydra.mode == "MULTIRUN"
        assert OmegaConf.load(sweep_dir / job.name / ".hydra" / "overrides.yaml") == list(job.overrides)


def test_a_rerun_runs_only_the_job_whose_result_was_deleted(grid_sweep, monkeypatch):
    arguments, sweep_dir, first = grid_sweep
    deleted = first["jobs"][1].name
    (sweep_dir / deleted / "summary.json").unlink()
    others = summary_times(sweep_dir)
    multirun(monkeypatch, *arguments)
    again = summary_times(sweep_dir)
    assert set(again) == {job.name for job in first["jobs"]}
    assert {name: again[name] for name in others} == others
    multirun(monkeypatch, *arguments)
    assert summary_times(sweep_dir) == again
    assert (report(sweep_dir)["table"]["status"] == "completed").all()


def test_a_failing_and_a_diverging_job_are_recorded_and_the_others_complete(tmp_path, monkeypatch):
    arguments = [*write_sweep(tmp_path / "conf", "failing", grid={"data.batch_size": 2, "threads": 1, **TINY_JOB}, list=[
        {"optimizer": "adam", "optimizer.lr": -1.0},         # rejected at start-up
        {"optimizer": "sgd", "optimizer.lr": 1.0e30},        # non-finite after one step
        {"optimizer": "adam", "optimizer.lr": 1.0e-3},
    ]), f"hydra.sweep.dir={tmp_path / 'out'}"]
    multirun(monkeypatch, *arguments)
    result = report(tmp_path / "out")
    table = result["table"].set_index("optimizer.lr")
    assert len(summary_times(tmp_path / "out")) == 3
    assert table.loc[-1.0, "status"] == "failed"
    assert table.loc[-1.0, "error"].startswith("optimizer.lr=-1.0 is invalid")
    assert table.loc[1.0e30, "status"] == "diverged"
    assert table.loc[1.0e-3, "status"] == "completed" and table.loc[1.0e-3, "steps"] == 4
    assert "| failed |" in result["markdown"].read_text()
    # finished jobs (completed or diverged) are not run again; the failed one is
    before = summary_times(tmp_path / "out")
    multirun(monkeypatch, *arguments)
    after = summary_times(tmp_path / "out")
    assert [name for name in after if after[name] != before[name]] == [result["jobs"][0].name]


def test_a_plain_multirun_is_hydras_cartesian_product(tmp_path, monkeypatch):
    assert cartesian(["a=1,2", "b=x", "c=3,4", "a=5,6"], OverridesParser.create()) == [
        ["a=5", "b=x", "c=3"], ["a=5", "b=x", "c=4"], ["a=6", "b=x", "c=3"], ["a=6", "b=x", "c=4"]]
    tiny = [f"{key}={render(value)}" for key, value in TINY_JOB.items()]
    multirun(monkeypatch, "-m", *tiny, "optimizer=adam", "seed=0,1", "threads=1", f"hydra.sweep.dir={tmp_path}")
    for number, seed in enumerate((0, 1)):  # job directories numbered as Hydra's basic sweeper numbers them
        assert f"seed={seed}" in OmegaConf.load(tmp_path / str(number) / ".hydra" / "overrides.yaml")
        assert OmegaConf.load(tmp_path / str(number) / "summary.json")["status"] == "completed"
    assert (tmp_path / "multirun.yaml").is_file() and not (tmp_path / "sweep.yaml").exists()


def test_sweep_py_runs_train_py_in_parallel_jobs_and_a_rerun_skips_them(tmp_path, capfd, monkeypatch):
    arguments = [*write_sweep(tmp_path / "conf", "parallel", grid={"data.batch_size": 2, **TINY_JOB},
                              list=[{"optimizer": "adam"}, {"optimizer": "sip"}]),
                 f"hydra.sweep.dir={tmp_path / 'out'}"]
    sweep_cli.main([*arguments, "hydra/launcher=joblib_1thread", "hydra.launcher.n_jobs=2"])  # train.py -m, a subprocess
    printed = capfd.readouterr().out
    assert "| adam | completed | 0 | 4 |" in printed and "| sip | completed | 0 | 4 |" in printed
    for job in ("optimizer=adam", "optimizer=sip"):
        assert "threads=1" in OmegaConf.load(tmp_path / "out" / job / ".hydra" / "overrides.yaml")
    finished = summary_times(tmp_path / "out")
    multirun(monkeypatch, *arguments)  # the same command again: nothing left to run
    assert "2 finished before, 0 to run" in capfd.readouterr().out
    assert summary_times(tmp_path / "out") == finished
    (tmp_path / "out" / "results.md").unlink()
    sweep_cli.main([*arguments, "--report-only"])
    assert "| sip | completed | 0 | 4 |" in capfd.readouterr().out and (tmp_path / "out" / "results.md").is_file()
    multirun(monkeypatch, *arguments, "hydra.sweeper.dry_run=true")  # what sweep.py --list runs
    assert capfd.readouterr().out.count("completed  optimizer=") == 2


def test_the_command_line_shrinks_a_named_sweep_for_a_smoke_test():
    sweep = Sweep(name="s", experiment="paper_fig11_heat",
                  grid={"optimizer": ["sip", "adam"], "optimizer.lr": [1e-2, 1e-3], "data.batch_size": [4, 32, 128]})
    jobs = plan(sweep, ["sweep=s", "optimizer.lr=1e-3", "data.batch_size=4,32", "seed=0,1", "trainer.max_steps=20"])
    assert [job.name for job in jobs] == [f"optimizer={rule},optimizer.lr=0.001,data.batch_size={batch},seed={seed}"
                                          for rule in ("sip", "adam") for batch in (4, 32) for seed in (0, 1)]
    assert jobs[0].overrides == ("experiment=paper_fig11_heat", "optimizer=sip", "optimizer.lr=0.001",
                                 "data.batch_size=4", "seed=0", "trainer.max_steps=20")
    with pytest.raises(SweepError, match=r"data.batch_size=8 selects no job of sweep s: .*\['4', '32', '128'\]"):
        plan(sweep, ["data.batch_size=8"])


def test_jobs_are_the_list_entries_crossed_with_the_grid_and_named_by_their_swept_keys():
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


def test_a_job_is_finished_only_by_the_run_identity_its_summary_records(tmp_path):
    identity = {"optimizer": {"lr": 0.001}, "seed": 0}
    assert job_state(tmp_path, "aaaa", identity, 10) == ("to run", [])  # never ran
    record = {"config_hash": "aaaa", "config_identity": identity, "status": "completed", "steps": 10}
    (tmp_path / "summary.json").write_text(json.dumps(record))
    assert job_state(tmp_path, "aaaa", identity, 10) == ("completed", [])
    assert job_state(tmp_path, "aaaa", identity, 20) == ("to run", [])  # a raised max_steps continues it
    edited = {"optimizer": {"lr": 0.1}, "seed": 0}
    assert job_state(tmp_path, "bbbb", edited, 10) == ("changed", ["optimizer.lr: 0.001 there, 0.1 now"])
    (tmp_path / "summary.json").write_text(json.dumps({**record, "status": "failed: boom"}))
    assert job_state(tmp_path, "aaaa", identity, 10) == ("to run", [])
    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "steps": 10}))  # recorded before hashes
    assert job_state(tmp_path, "aaaa", identity, 10) == ("to run", [])  # train.py checks its checkpoint instead


def test_an_edited_experiment_runs_its_jobs_again_and_the_report_shows_no_stale_result(tmp_path, monkeypatch, capfd):
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    experiment = conf / "experiment" / "tiny_edited.yaml"
    experiment.write_text("# @package _global_\noptimizer:\n  lr: 1.0e-3\n")
    arguments = [*write_sweep(conf, "edited", experiment="tiny_edited",
                              grid={"optimizer": ["adam"], "data.batch_size": 2, "threads": 1, **TINY_JOB}),
                 f"hydra.sweep.dir={tmp_path / 'out'}"]
    multirun(monkeypatch, *arguments)
    job_dir = tmp_path / "out" / "optimizer=adam"
    first = read_summary(job_dir)
    experiment.write_text("# @package _global_\noptimizer:\n  lr: 1.0e-1\n")
    capfd.readouterr()
    multirun(monkeypatch, *arguments, "hydra.sweeper.dry_run=true")  # what sweep.py --list runs
    assert "changed  optimizer=adam  (optimizer.lr: 0.001 there, 0.1 now)" in capfd.readouterr().out
    multirun(monkeypatch, *arguments)
    again = read_summary(job_dir)
    assert again["config_identity"]["optimizer"]["lr"] == 0.1 and again["config_hash"] != first["config_hash"]
    (aside,) = job_dir.glob("replaced-*")
    assert read_summary(aside) == first and (aside / "checkpoints" / "last.ckpt").is_file()
    assert pd.read_csv(job_dir / "metrics.csv")["step"].is_monotonic_increasing  # one run's rows only
    table = report(tmp_path / "out")["table"]
    assert table.loc[0, "status"] == "completed" and table.loc[0, "x_l1"] == pytest.approx(again["x_l1"])
    sweep, jobs, _ = load_plan(tmp_path / "out")
    stale_jobs = [dataclasses.replace(job, config_hash=first["config_hash"]) for job in jobs]  # a plan of the old file
    stale, curves = collect(sweep, stale_jobs, tmp_path / "out")
    assert stale.loc[0, "status"] == "stale" and pd.isna(stale.loc[0, "x_l1"]) and curves.empty
    record("experiment file edited after a sweep ran", "re-running the sweep (lr 1e-3 -> 1e-1)",
           "the job is listed as changed naming the key, runs again; its earlier run moved to replaced-<date>/; "
           "a report against an older plan lists it as stale, without metrics", "nothing")


def test_with_wandb_on_the_aggregate_is_one_run_in_the_sweeps_group(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep_dir = tmp_path / "heat_lr_batch"
    sweep_dir.mkdir()
    figure = tmp_path / "figure.png"
    plt.imsave(figure, np.zeros((4, 4)))
    for _ in range(2):  # a re-report continues the same run
        assert log_to_wandb(sweep_dir, pd.DataFrame({"x_l1": [1.0]}), [figure], {"project": "p", "mode": "auto"}) \
            == "heat_lr_batch"
    runs = list((sweep_dir / "wandb").glob("offline-run-*"))
    assert len(runs) >= 1 and len({run.name.split("-")[3] for run in runs}) == 1  # offline-run-<time>-<id>[-n]
    for run in runs:  # read once W&B's service has written the run's exit record, however long that takes
        (info,) = [r.run for r in finished_run_records(next(run.glob("*.wandb"))) if r.WhichOneof("record_type") == "run"]
        assert info.run_group == "heat_lr_batch"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert log_to_wandb(sweep_dir, pd.DataFrame(), [], {"project": "p", "mode": "auto"}) is None


# --- figures -----------------------------------------------------------------------------------------


def _figure_jobs():
    jobs = [Job(f"optimizer={rule},data.batch_size={batch}", {"optimizer": rule, "data.batch_size": batch}, ())
            for rule in ("sip", "adam") for batch in (4, 32, 128)]
    results = pd.DataFrame({"optimizer": [job.params["optimizer"] for job in jobs],
                            "data.batch_size": [job.params["data.batch_size"] for job in jobs],
                            "x_l1": [50.0, 60.0, 90.0, 120.0, 200.0, 400.0], "run_dir": [job.name for job in jobs]})
    steps = np.arange(0, 101, 10)
    curves = pd.concat([pd.DataFrame({"job": job.name, "curve": "val/x_l1", "step": steps, "time_s": steps * 0.1,
                                      "value": 400.0 * np.exp(-steps / (30 + 10 * i))}) for i, job in enumerate(jobs)])
    sweep = Sweep(name="heat_lr_batch", grid={"optimizer": ["sip", "adam"], "data.batch_size": [4, 32, 128]},
                  curves=["val/x_l1"])
    return sweep, jobs, results, curves


def _boxes_overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_versus_is_ticked_at_the_swept_values_and_its_legend_is_outside_the_data():
    sweep, jobs, results, _ = _figure_jobs()
    fig = versus(results, jobs, sweep, x="data.batch_size", log_x=True, hue=["optimizer"])
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and list(ax.get_xticks()) == [4, 32, 128]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["4", "32", "128"]
    assert not [label for label in ax.get_xticklabels(minor=True) if label.get_text()]
    assert ax.get_title() and len(fig.legends) == 1 and ax.get_legend() is None
    assert not _boxes_overlap(fig.legends[0].get_window_extent(), ax.get_window_extent())
    plt.close(fig)


def test_a_job_with_a_single_validation_is_drawn_as_a_dot():
    """A run that diverged before its second validation has one point: a line alone would not show it."""
    sweep, jobs, _, curves = _figure_jobs()
    lone = jobs[0].name
    curves = pd.concat([curves[curves["job"] != lone], curves[curves["job"] == lone].head(1)])
    fig = learning_curves(curves, jobs, sweep)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    markers = {label: line.get_marker() for label, line in lines.items()}
    assert markers.pop(job_label(jobs[0].params)) == "o" and set(markers.values()) == {"None"}
    plt.close(fig)


def test_learning_curve_figures_are_titled_with_log_axes_labelled_once_and_legends_outside():
    sweep, jobs, _, curves = _figure_jobs()
    for fig in (learning_curves(curves, jobs, sweep), curve_grid(curves, jobs, sweep, rows="optimizer",
                                                                   cols="data.batch_size")):
        fig.canvas.draw()
        assert fig.get_suptitle() and len(fig.legends) == 1
        for ax in fig.axes:
            assert ax.get_yscale() == "log"
            assert not _boxes_overlap(fig.legends[0].get_window_extent(), ax.get_window_extent())
            low, high = ax.get_ylim()
            shown = [label for label in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
                     if label.get_text() and low <= label.get_position()[1] <= high]
            texts = [label.get_text() for label in shown]
            assert len(texts) == len(set(texts))
            if ax.get_subplotspec().is_first_col():  # panels sharing its y axis show no labels of their own
                assert len(texts) >= 2
        plt.close(fig)


# --- configs -------------------------------------------------------------------------------------------


def composed(*overrides):
    """conf/config.yaml composed with overrides, the hydra node kept (choices, launcher, mode)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", options("sweep"))
def test_every_sweep_file_expands_into_jobs_that_compose(name):
    cfg = composed(f"sweep={name}")
    assert cfg.hydra.mode == RunMode.MULTIRUN and cfg.hydra.sweeper._target_.endswith("SipSweeper")
    sweep = Sweep.from_spec(name, cfg.sweep, cfg.hydra.runtime.choices.experiment)
    jobs = expand(sweep)
    assert len({job.name for job in jobs}) == len(jobs) > 1
    covered: set[str] = set()
    for job in jobs:  # compose jobs until every swept key and every swept config-group option is used
        uses = {f"{key}={value}" if (CONF / key).is_dir() else key for key, value in job.params.items()}
        if uses - covered:
            job_cfg = compose_config(list(job.overrides))
            build_components(job_cfg.problem, job_cfg.optimizer, job_cfg.network, job_cfg.seed)
            covered |= uses
    for axis in ("rows", "cols"):
        key = sweep.plots.get("grid", {}).get(axis)
        assert key is None or key in sweep.swept_keys
    assert sweep.plots.get("versus", {}).get("x", sweep.swept_keys[0]) in sweep.swept_keys


def test_a_sweep_name_that_does_not_exist_lists_the_sweeps():
    with pytest.raises(MissingConfigException, match="heat_lr_batch"):
        composed("sweep=nonsense")


def test_no_module_imports_hydras_internals():
    internal = "hydra." + "_internal"
    sources = [path for pattern in ("*.py", "sip_train/**/*.py", "hydra_plugins/**/*.py", "tests/*.py", "bench/*.py")
               for path in REPO.glob(pattern)]
    assert len(sources) > 20
    assert [str(path) for path in sources if internal in path.read_text()] == []


def _referenced_configs(path):
    """conf/<group>/<option>.yaml files that an experiment's defaults list overrides."""
    defaults = OmegaConf.load(path).get("defaults", [])
    return [CONF / f"{str(next(iter(entry))).split('/')[-1]}/{next(iter(entry.values()))}.yaml"
            for entry in defaults if isinstance(entry, dict) and str(next(iter(entry))).startswith("override /")]


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_gives_each_rule_its_paper_learning_rate(experiment):
    missing = [str(p) for p in _referenced_configs(CONF / "experiment" / f"{experiment}.yaml") if not p.is_file()]
    assert not missing, f"experiment={experiment} uses configs that do not exist: {missing}"
    cfg = compose_config([f"experiment={experiment}"])
    build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
    paper_lr = cfg.get("paper_lr") or {}
    assert set(paper_lr) <= set(options("optimizer"))
    other = next((rule for rule in paper_lr if rule != cfg.optimizer._target_.rsplit(".", 1)[-1].lower()), None)
    if other is not None:
        cfg = compose_config([f"experiment={experiment}", f"optimizer={other}"])
        assert build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)[2].lr == paper_lr[other]


def test_the_launcher_configs_set_parallel_jobs_and_threads():
    joblib = composed("hydra/launcher=joblib_1thread", "hydra.launcher.n_jobs=4").hydra
    slurm = composed("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu").hydra
    assert joblib.launcher._target_.endswith("JoblibLauncher") and joblib.launcher.n_jobs == 4
    assert joblib.job.env_set.OMP_NUM_THREADS == "1"
    assert slurm.launcher._target_.endswith("SlurmLauncher") and slurm.launcher.gpus_per_node == 1
    assert int(slurm.job.env_set.OMP_NUM_THREADS) == slurm.launcher.cpus_per_task


def test_the_optuna_sweeper_config_composes_when_the_optional_extra_is_installed():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -r requirements-optuna.txt")
    sweeper = composed("hydra/sweeper=optuna_lr").hydra.sweeper
    assert sweeper.direction == "minimize" and "optimizer.lr" in sweeper.params


def test_an_experiment_learning_rate_reaches_the_trained_module(tiny_config):
    cfg = tiny_config("experiment=paper_fig6_heat", "optimizer=sgd")
    module = InverseProblemModule(cfg.problem, cfg.optimizer, cfg.network, cfg.seed, 0)
    assert module.rule.lr == 2.0e-6
