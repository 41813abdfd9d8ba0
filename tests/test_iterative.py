"""Per-example iterative baselines (Fig. 13): GD and L-BFGS-B from x0 = 0 against trained networks."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from sip_train.iterative import Recorder, compare, compare_runs, figure, gradient_descent, lbfgsb, main
from sip_train.problems.heat import Heat
from sip_train.run import train


@pytest.fixture
def heat_examples():
    problem = Heat(resolution=16)
    x_true, y_target = problem.sample(3, torch.Generator().manual_seed(0))
    return problem, x_true, y_target


def no_record(iteration, x, examples=slice(None)):
    pass


def test_gradient_descent_on_heat_is_the_per_frequency_recursion(heat_examples):
    problem, _, y_target = heat_examples
    x = gradient_descent(problem, y_target, torch.zeros_like(y_target), 25, lr=1.0, observe=no_record)
    # P is a periodic convolution with a real even kernel d: each Fourier mode follows
    # x^ <- x^ - lr d (d x^ - y^) on its own
    impulse = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    impulse[..., 0, 0] = 1
    d = torch.fft.fft2(problem.simulate(impulse)).real
    y_hat, x_hat = torch.fft.fft2(y_target), torch.zeros_like(torch.fft.fft2(y_target))
    for _ in range(25):
        x_hat = x_hat - d * (d * x_hat - y_hat)
    torch.testing.assert_close(x, torch.fft.ifft2(x_hat).real, rtol=0, atol=1e-10)


def test_lbfgsb_solves_each_example_on_its_own_and_beats_gradient_descent(heat_examples):
    problem, _, y_target = heat_examples
    start = torch.zeros_like(y_target)
    together = lbfgsb(problem, y_target, start, 20, observe=no_record)
    alone = lbfgsb(problem, y_target[1:2], start[1:2], 20, observe=no_record)
    torch.testing.assert_close(together[1:2], alone)
    descent = gradient_descent(problem, y_target, start, 20, lr=1.0, observe=no_record)
    loss = problem.physics_loss
    assert (loss(together, y_target) < 0.5 * loss(descent, y_target)).all()
    assert (loss(descent, y_target) < loss(start, y_target)).all()


def test_recorded_curves_start_at_x0_and_the_clock_only_moves_forward(heat_examples):
    problem, x_true, y_target = heat_examples
    table, curves = compare(problem, x_true, y_target, iterations=6, every=3)
    assert table["method"].tolist() == ["GD", "L-BFGS-B"]
    for method, points in curves.groupby("method"):
        assert points["iteration"].tolist() == [0, 3, 6]
        # from x0 = 0 the x error is sum |x*|
        assert points["x_l1"].iloc[0] == pytest.approx(float(x_true.abs().sum((1, 2, 3)).mean()))
        assert points["x_l1"].iloc[-1] < points["x_l1"].iloc[0]
        assert points["time_s"].is_monotonic_increasing and points["time_s"].iloc[-1] > 0
    assert table.set_index("method").loc["L-BFGS-B", "x_l1"] == pytest.approx(curves["x_l1"].iloc[-1])


def test_the_figure_is_titled_and_its_legend_is_outside_both_panels(heat_examples):
    problem, x_true, y_target = heat_examples
    table, curves = compare(problem, x_true, y_target, iterations=4, every=2)
    table = pd.concat([table, pd.DataFrame([{"method": "NN sip", "iterations": None, "x_l1": 10.0, "time_s": 0.01}])])
    fig = figure(table, curves)
    fig.canvas.draw()
    assert "GD and L-BFGS-B against trained networks" in fig.get_suptitle() and len(fig.legends) == 1
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["GD", "L-BFGS-B", "NN sip"]
    legend = fig.legends[0].get_window_extent()
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert legend.x0 >= box.x1 or legend.y0 >= box.y1  # right of or above every panel


def test_a_recorder_shares_batched_time_among_its_examples(heat_examples):
    problem, x_true, y_target = heat_examples
    recorder = Recorder(problem, x_true, y_target, iterations=2, every=1)
    for iteration in range(3):
        recorder(iteration, torch.zeros_like(x_true))
    single = Recorder(problem, x_true, y_target, iterations=2, every=1)
    for example in range(3):
        for iteration in range(3):
            single(iteration, torch.zeros_like(x_true[example:example + 1]), slice(example, example + 1))
    assert recorder.seconds[-1].sum() == pytest.approx(recorder.curve()["time_s"].iloc[-1])
    assert (single.seconds > 0).all() and not single.curve().isna().any().any()
    torch.testing.assert_close(torch.tensor(single.values["x_l1"]), torch.tensor(recorder.values["x_l1"]))


def test_trained_networks_are_scored_on_their_own_validation_set(tiny_config, tmp_path):
    runs = {}
    for rule in ("sip", "adam"):
        cfg = tiny_config("problem=heat", "problem.resolution=8", "network.levels=2", f"optimizer={rule}",
                          "trainer.max_steps=5", f"run_dir={tmp_path / rule}")
        summary = train(cfg)  # which writes .hydra/config.yaml, as Hydra would
        runs[rule] = (tmp_path / rule, summary)
    result = compare_runs({rule: run_dir for rule, (run_dir, _) in runs.items()}, tmp_path / "fig13",
                          iterations=4, every=2)
    table = result["table"].set_index("method")
    for rule, (_, summary) in runs.items():
        assert table.loc[f"NN {rule}", "x_l1"] == pytest.approx(summary["x_l1"], rel=1e-5)
        assert table.loc[f"NN {rule}", "time_s"] > 0
    assert {"GD", "L-BFGS-B"} <= set(table.index)
    assert (tmp_path / "fig13" / "iterative.png").stat().st_size > 10_000
    assert "| NN sip |" in (tmp_path / "fig13" / "iterative.md").read_text()
    OmegaConf.save(OmegaConf.merge(OmegaConf.load(tmp_path / "adam" / ".hydra" / "config.yaml"), {"seed": 5}),
                   tmp_path / "adam" / ".hydra" / "config.yaml")
    with pytest.raises(ValueError, match="validated on different examples"):
        compare_runs({rule: run_dir for rule, (run_dir, _) in runs.items()}, tmp_path / "other", iterations=1)


def test_the_command_line_composes_a_validation_set_from_overrides(tmp_path, capsys):
    main(["problem=heat", "problem.resolution=8", "data.val_size=2", "--iterations", "3", "--every", "1",
          "--out", str(tmp_path)])
    assert "| L-BFGS-B | 3 |" in capsys.readouterr().out
    curves = pd.read_csv(tmp_path / "iterative_curves.csv")
    assert curves.groupby("method")["iteration"].apply(list).to_dict() == {"GD": [0, 1, 2, 3], "L-BFGS-B": [0, 1, 2, 3]}
