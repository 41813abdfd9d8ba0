"""The Python API and the commands behind sip-eval and sip-compare: train outside a Hydra app, evaluate a run
again (its own validation set gives the numbers of its final validation), compare runs averaged over seeds,
a run's learning-curve figure, and the comparison a plain -m multirun writes when it ends."""
from __future__ import annotations

import json
import runpy
import shutil
import sys
from types import SimpleNamespace

import pandas as pd
import pytest
from omegaconf import OmegaConf

from conftest import REPO, TINY, compose_config
from sip_train import cli, compare, evaluate, learning_curves, report_format, train
from sip_train.evaluation import EvaluationError
from sip_train.learning_curves import LearningCurves
from sip_train.run import ConfigError
from sip_train.sweep.figures import curve_grid
from sip_train.sweep.spec import Job, Sweep

EXP = [*TINY, "problem=exp", "updates_per_step=1", "data.steps_per_draw=1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three finished runs in one folder: adam with seeds 0 and 1, sgd with seed 0."""
    base = tmp_path_factory.mktemp("runs")
    summaries = {name: train([*EXP, f"optimizer={rule}", f"seed={seed}"], run_dir=base / name)
                 for name, rule, seed in (("adam-0", "adam", 0), ("adam-1", "adam", 1), ("sgd-0", "sgd", 0))}
    return base, summaries


def test_train_returns_the_final_metrics_and_writes_the_records_of_a_run(runs):
    base, summaries = runs
    summary = summaries["adam-0"]
    assert (summary["status"], summary["steps"], summary["problem"], summary["optimizer"]) == ("completed", 4, "exp", "adam")
    last_validation = pd.read_csv(base / "adam-0" / "metrics.csv").dropna(subset=["val/x_l1"]).iloc[-1]
    assert summary["x_l1"] == pytest.approx(last_validation["val/x_l1"], rel=1e-6)
    assert json.loads((base / "adam-0" / "summary.json").read_text())["x_l1"] == summary["x_l1"]
    assert OmegaConf.load(base / "adam-0" / ".hydra" / "config.yaml").optimizer.lr == 1e-3
    assert "optimizer=adam" in OmegaConf.load(base / "adam-0" / ".hydra" / "overrides.yaml")


def test_train_refuses_a_bad_key_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"optimizer has no key 'lrr' \(did you mean lr\?\)"):
        train([*EXP, "optimizer.lrr=1"], run_dir=tmp_path)


def test_evaluate_on_the_runs_own_validation_set_repeats_its_final_validation(runs):
    base, summaries = runs
    result = evaluate(base / "adam-1", ["figure_examples=2"], name="val")
    assert result["metrics"]["x_l1"] == pytest.approx(summaries["adam-1"]["x_l1"], rel=1e-6)
    assert result["metrics"]["y_l2"] == pytest.approx(summaries["adam-1"]["y_l2"], rel=1e-6)
    written = json.loads((base / "adam-1" / "eval" / "val" / "metrics.json").read_text())
    assert written["step"] == 4 and written["metrics"] == result["metrics"]
    assert (base / "adam-1" / "eval" / "val" / "figures" / "examples.png").is_file()


def test_evaluate_on_another_validation_set_and_from_a_checkpoint_file(runs):
    base, summaries = runs
    other = evaluate(base / "adam-1" / "checkpoints" / "last.ckpt", ["data.val_size=16", "seed=7"])
    assert other["eval_dir"] == base / "adam-1" / "eval" / "data.val_size=16,seed=7"
    assert json.loads((other["eval_dir"] / "metrics.json").read_text())["val_size"] == 16
    assert other["metrics"]["x_l1"] != pytest.approx(summaries["adam-1"]["x_l1"], rel=1e-3)


def test_evaluate_refuses_overrides_that_change_the_network_or_the_shapes(runs, tmp_path):
    base, _ = runs
    with pytest.raises(EvaluationError, match=r"^network.hidden=\[8\]: an evaluation keeps the network"):
        evaluate(base / "adam-0", ["network.hidden=[8]"])
    with pytest.raises(EvaluationError, match=r"^problem=heat: an evaluation keeps what was trained"):
        evaluate(base / "adam-0", ["problem=heat"])
    heat = tmp_path / "heat"  # a heat run's records: the shapes are refused before its checkpoint is read
    (heat / ".hydra").mkdir(parents=True)
    (heat / "checkpoints").mkdir()
    (heat / "checkpoints" / "last.ckpt").write_bytes(b"")
    OmegaConf.save(compose_config([*TINY, "problem=heat", "problem.resolution=8"], heat), heat / ".hydra" / "config.yaml")
    with pytest.raises(EvaluationError, match=r"^problem.resolution=16 changes the shapes \(x \[1, 8, 8\] -> \[1, 16, 16\]"):
        evaluate(heat, ["problem.resolution=16"])


def test_compare_averages_over_seeds_one_row_per_configuration(runs, tmp_path):
    base, summaries = runs
    result = compare([base], out_dir=tmp_path)
    table = pd.read_csv(tmp_path / "comparison.csv").set_index("optimizer")
    adam = [summaries["adam-0"]["x_l1"], summaries["adam-1"]["x_l1"]]
    assert table.loc["adam", "runs"] == 2 and table.loc["adam", "seeds"] == "0,1"
    assert table.loc["adam", "x_l1_mean"] == pytest.approx(sum(adam) / 2)
    assert table.loc["adam", "x_l1_std"] == pytest.approx(abs(adam[0] - adam[1]) / 2 ** 0.5)
    assert table.loc["sgd", "runs"] == 1 and table.loc["sgd", "x_l1_mean"] == pytest.approx(summaries["sgd-0"]["x_l1"])
    assert table.loc["sgd", "steps"] == 4 and table.loc["sgd", "step_ms_median"] > 0
    assert "| adam | 2 | 2 | 0,1 |" in result["markdown"].read_text()
    assert len(pd.read_csv(tmp_path / "comparison_runs.csv")) == 3 and result["figure"].is_file()


def test_the_comparison_legend_shows_swept_values_as_they_were_typed(runs, tmp_path, monkeypatch):
    """Values saved as override text (0.001, 1e6, lists) are labelled as values, not as quoted strings."""
    base, _ = runs
    for name, value in (("a", "0.001"), ("b", "1000000.0"), ("c", "[8,8]")):
        shutil.copytree(base / "adam-0", tmp_path / "runs" / name)
        OmegaConf.save(["optimizer=adam", f"optimizer.lr={value}"], tmp_path / "runs" / name / ".hydra" / "overrides.yaml")
    legends = []
    monkeypatch.setattr(report_format, "save", lambda fig, path: legends.append(
        [text.get_text() for text in fig.legends[0].get_texts()]) or path)
    compare([tmp_path / "runs"], out_dir=tmp_path / "out")
    assert legends == [["lr=0.001", "lr=1000000.0", "lr=[8,8]"]]


def test_learning_curves_are_redrawn_when_due_and_drawn_at_the_end(runs, tmp_path, monkeypatch):
    """While training, a validation redraws the figure only once MIN_REDRAW_INTERVAL_S have passed (a clock
    stands in for time); `draw`, called at the end of every run, always draws it."""
    base, _ = runs
    (tmp_path / "metrics.csv").write_text((base / "sgd-0" / "metrics.csv").read_text())
    figure = tmp_path / "figures" / "learning_curves.png"
    clock = [0.0]
    monkeypatch.setattr(learning_curves.time, "perf_counter", lambda: clock[0])
    saved = []
    trainer = SimpleNamespace(sanity_checking=False, is_global_zero=True, default_root_dir=str(tmp_path),
                              loggers=[SimpleNamespace(save=lambda: saved.append(True))])
    curves = LearningCurves()
    clock[0] = learning_curves.MIN_REDRAW_INTERVAL_S - 1
    curves.on_validation_end(trainer, None)
    assert not figure.exists() and not saved
    clock[0] = learning_curves.MIN_REDRAW_INTERVAL_S
    curves.on_validation_end(trainer, None)
    assert saved and figure.stat().st_size > 0
    figure.unlink()
    clock[0] += 1  # just drawn: not due again for a while, not while sanity checking either
    curves.on_validation_end(trainer, None)
    curves.on_validation_end(SimpleNamespace(**{**vars(trainer), "sanity_checking": True}), None)
    assert not figure.exists()
    curves.draw(trainer)
    assert figure.stat().st_size > 0


def test_a_plain_multirun_ends_with_a_comparison_in_its_sweep_directory(tmp_path, monkeypatch):
    overrides = [*EXP, "optimizer=adam,sgd", f"hydra.sweep.dir={tmp_path}"]
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", *overrides])
    runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    table = pd.read_csv(tmp_path / "comparison.csv")
    assert sorted(table["optimizer"]) == ["adam", "sgd"] and list(table["runs"]) == [1, 1]
    assert (tmp_path / "comparison.md").is_file() and (tmp_path / "comparison.png").is_file()


def test_a_grid_figure_title_fits_inside_a_narrow_figure():
    jobs = [Job(f"job{lr}", {"optimizer.lr": lr, "data.batch_size": 4}, ()) for lr in (1e-3, 1e-4)]
    curves = pd.concat([pd.DataFrame({"curve": "val/x_l1", "step": [0, 1], "time_s": [0.0, 1.0], "value": [2.0, 1.0],
                                      "job": job.name}) for job in jobs])
    sweep = Sweep(name="a_sweep_with_a_rather_long_name_for_one_column", curves=["val/x_l1", "train/y_l2"])
    fig = curve_grid(curves, jobs, sweep, rows="optimizer.lr", cols="data.batch_size")
    fig.canvas.draw()
    title = fig._suptitle.get_window_extent()
    assert fig.bbox.x0 <= title.x0 and title.x1 <= fig.bbox.x1 and title.y1 <= fig.bbox.y1
    assert "a_sweep_with_a_rather_long_name_for_one_column" in fig.get_suptitle()  # no word broken


def test_sip_eval_and_sip_compare_print_their_results_and_refuse_in_one_line(runs, tmp_path, capsys):
    base, summaries = runs
    cli.eval_command([str(base / "sgd-0"), "--name", "again"])
    out = capsys.readouterr().out
    assert f"x_l1  {summaries['sgd-0']['x_l1']:.6g}" in out and str(base / "sgd-0" / "eval" / "again") in out
    with pytest.raises(SystemExit) as stop:
        cli.eval_command([str(base / "sgd-0"), "optimizer.lr=1"])
    assert stop.value.code == 2 and capsys.readouterr().err.startswith("error: optimizer.lr=1: an evaluation keeps")
    cli.compare_command([str(base / "adam-0"), str(base / "adam-1"), "--out", str(tmp_path)])
    assert "| exp | adam | 2 | 2 | 0,1 |" in capsys.readouterr().out  # one configuration, named by problem and rule
    with pytest.raises(SystemExit) as stop:
        cli.compare_command([str(tmp_path / "nothing")])
    assert stop.value.code == 2 and "no such directory" in capsys.readouterr().err
