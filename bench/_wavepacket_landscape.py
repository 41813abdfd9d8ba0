"""Why the wave packet (Fig. 16) is hard here: each example's loss in t0, and the batch's loss along a joint path.

From the trained runs of the `wavepacket_readings` sweep (one seed per carrier frequency) on their validation
set: the x error of predicting the centre of the range, of the problem's L-BFGS-B (mean over samples) and of
L-BFGS-B on the sum (the paper's objective), of the best t0 on a fine grid (the data's own limit), the share of
examples whose loss gradient at the centre points toward the truth, and the mean loss when every prediction
moves from the centre toward its truth by the same fraction. Writes docs/reproduction/<budget>/
wavepacket_landscape.json and fig16_wavepacket_landscape.png.

    python bench/_wavepacket_landscape.py --budget cpu
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO  # noqa: E402

from sip_train.iterative import run_config, validation_set  # noqa: E402
from sip_train.module import InverseProblemModule  # noqa: E402
from sip_train.physics import wave_packet  # noqa: E402
from sip_train.summary import read_summary  # noqa: E402

SWEEP = "wavepacket_readings"
FRACTIONS = (0.0, 0.25, 0.5, 0.75, 0.85, 0.9, 0.95, 1.0)
EXAMPLES_DRAWN = 4


def per_example_loss(problem: torch.nn.Module, t0: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
    """L(t0) = 1/2 sum_t (y(t; t0) - y*)^2 for t0 of shape (B, K): the loss of each example at K offsets, (B, K)."""
    packets = wave_packet.forward(t0.reshape(-1, 1), **problem.packet).reshape(*t0.shape, -1)
    return 0.5 * (packets - y_target[:, 0, None, :]).pow(2).sum(-1)


def analyse(run_dir: Path) -> dict:
    """The numbers of one trained run (see the module docstring), and the curves the figure needs."""
    cfg = run_config(run_dir)
    problem, x_true, y_target = validation_set(cfg)
    x_true, y_target = x_true.double(), y_target.double()
    module = InverseProblemModule.load_from_checkpoint(read_summary(run_dir)["last_checkpoint"], map_location="cpu")
    with torch.no_grad():
        network = module.predict(y_target.float()).double()
    low, high = problem.t0_range
    centre = 0.5 * (low + high)
    fits = {reduction: wave_packet.fit_lbfgsb(y_target, centre, problem.t0_range, problem.lbfgsb_max_iter,
                                              reduction=reduction, **problem.packet) for reduction in ("mean", "sum")}
    grid = torch.linspace(low, high, 1024, dtype=torch.float64)
    landscape = per_example_loss(problem, grid.expand(len(y_target), -1), y_target)
    best = grid[landscape.argmin(1)][:, None]
    start = torch.full_like(x_true, centre, requires_grad=True)
    per_example_loss(problem, start, y_target).sum().backward()
    toward = ((-start.grad).sign() == (x_true - centre).sign()).double().mean().item()
    path = [per_example_loss(problem, centre + a * (x_true - centre), y_target).mean().item() for a in FRACTIONS]

    def error(t0: torch.Tensor) -> float:
        return (t0 - x_true).abs().mean().item()

    drawn = range(EXAMPLES_DRAWN)
    return {
        "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
        "frequency": problem.packet["frequency"], "examples": len(x_true),
        "network_x_l1": error(network), "centre_x_l1": error(torch.full_like(x_true, centre)),
        "lbfgsb_mean_x_l1": error(fits["mean"]), "lbfgsb_sum_x_l1": error(fits["sum"]), "grid_best_x_l1": error(best),
        "network_within_1": ((network - x_true).abs() < 1).double().mean().item(),
        "lbfgsb_within_1": ((fits["mean"] - x_true).abs() < 1).double().mean().item(),
        "gradient_toward_truth": toward, "path_fractions": list(FRACTIONS), "path_mean_loss": path,
        "curves": {"t0": grid.tolist(), "loss": landscape[list(drawn)].round(decimals=3).tolist(),
                   "true": x_true[list(drawn), 0].tolist(), "network": network[list(drawn), 0].tolist(),
                   "lbfgsb": fits["mean"][list(drawn), 0].tolist()},
    }


def figure(analyses: list[dict], path: Path) -> None:
    """Left: L(t0) of a few examples at the paper's frequency with the estimates; right: the joint path."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), layout="constrained", width_ratios=(1.6, 1))
    paper = analyses[0]["curves"]
    for index, loss in enumerate(paper["loss"]):
        offset = 60.0 * index
        axes[0].plot(paper["t0"], [value + offset for value in loss], color=f"C{index}", lw=0.9)
        for key, marker in (("true", "*"), ("network", "o"), ("lbfgsb", "x")):
            t0 = paper[key][index]
            y = loss[min(range(len(paper["t0"])), key=lambda k: abs(paper["t0"][k] - t0))] + offset
            axes[0].plot([t0], [y], marker=marker, color="k" if marker == "x" else f"C{index}", ls="none",
                         ms={"*": 9, "o": 5, "x": 7}[marker], mew=1.5, zorder=3,
                         label={"true": "true t0*", "network": "network", "lbfgsb": "L-BFGS-B"}[key] if index == 0 else None)
    axes[0].set(xlabel="t0 (samples)", ylabel="L(t0) (offset per example)",
                title=f"per-example loss, f = {analyses[0]['frequency']:g}")
    axes[0].legend(fontsize=7)
    for index, analysis in enumerate(analyses):
        axes[1].plot(analysis["path_fractions"], analysis["path_mean_loss"], marker="o", ms=3, color=f"C{index}",
                     label=f"f = {analysis['frequency']:g}")
    axes[1].set(xlabel="fraction of the way from the centre to each t0*", ylabel="mean loss over the validation set",
                title="all predictions moved together")
    axes[1].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def load(path: Path) -> list[dict] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def describe(analyses: list[dict]) -> str:
    """One sentence per frequency for the row of REPRODUCTION.md."""
    return " ".join(
        f"Seed 0 at f = {a['frequency']:g} on {a['examples']} validation examples: centre of the range "
        f"{a['centre_x_l1']:.3g}, L-BFGS-B on the mean {a['lbfgsb_mean_x_l1']:.3g} ({100 * a['lbfgsb_within_1']:.0f} % "
        f"within 1 sample), on the sum {a['lbfgsb_sum_x_l1']:.3g}, network {a['network_x_l1']:.3g} "
        f"({100 * a['network_within_1']:.0f} % within 1), best t0 on a grid {a['grid_best_x_l1']:.3g}; the loss "
        f"gradient at the centre points toward t0* for {100 * a['gradient_toward_truth']:.0f} % of the examples."
        for a in analyses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=("cpu", "paper"), default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    sweep_dir = REPO / "multirun" / "reproduction" / args.budget / SWEEP
    table = pd.read_csv(sweep_dir / "results.csv")
    seed0 = table[(table["status"] == "completed") & (table.get("seed", 0) == 0)]
    runs = [sweep_dir / name for name in seed0.sort_values("problem.frequency", ascending=False)["run_dir"]]
    analyses = [analyse(run_dir) for run_dir in runs]
    out = REPO / "docs" / "reproduction" / args.budget
    out.mkdir(parents=True, exist_ok=True)
    (out / "wavepacket_landscape.json").write_text(json.dumps(analyses, indent=1))
    figure(analyses, out / "fig16_wavepacket_landscape.png")
    print(describe(analyses))


if __name__ == "__main__":
    main()
