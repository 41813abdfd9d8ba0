"""Fluid (Navier-Stokes) at reduced size: SIP's reverse-simulation estimator against Adam through 8 steps.

Each method is one `python train.py problem=fluid` run from the same seed (same initial U-Net, same
data), with Adam at the paper's learning rate 5e-3 as the network optimizer of both. Reported: the
validation error of the initial velocity, gt_v0_l1 = sum over cells of |v0 - v0*| (the paper's
metric), the trajectory error gt_v_l1 and the marker loss, at the start, after `--val-every` steps and
at the end, and the median wall-clock time per training step (start to start: data generation,
simulation, update and logging), also at the paper's size for a few steps.

    python bench/fluid.py --resolution 32 --batch 16 --steps 40 --val-every 20 --paper-steps 5 --threads 1 \\
        --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, write_section  # noqa: E402
from sip_train.summary import read_summary  # noqa: E402

METHODS = {"SIP": "sip", "Adam": "adam"}
PAPER_LR = 5e-3


def run(rule: str, resolution: int, batch: int, steps: int, val_every: int, val_size: int,
        args: argparse.Namespace, run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """Train with train.py; returns the summary and the validation rows of metrics.csv."""
    # the paper's 5 levels named explicitly: training runs do not yet see the problem's network_defaults
    overrides = [
        "problem=fluid", "network=unet", "network.levels=5", f"optimizer={rule}", f"optimizer.lr={PAPER_LR}",
        f"problem.resolution={resolution}",
        f"data.batch_size={batch}", f"data.val_size={val_size}", f"data.val_batch_size={val_size}",
        f"trainer.max_steps={steps}", f"trainer.val_check_interval={val_every}",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv", "figure_examples=0",
        f"threads={args.threads}", f"seed={args.seed}", f"hydra.run.dir={run_dir}",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, env=environment, check=True,
                   capture_output=True)
    validation = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/gt_v0_l1"]).set_index("step")
    return read_summary(run_dir), validation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--val-every", type=int, default=20)
    parser.add_argument("--val-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper-steps", type=int, default=5,
                        help="steps timed at the paper's 64x64, batch 64 (0: skip)")
    parser.add_argument("--write", type=Path, help="replace the `fluid` section of this Markdown file")
    args = parser.parse_args()

    table, paper_rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for method, rule in METHODS.items():
            summary, validation = run(rule, args.resolution, args.batch, args.steps, args.val_every, args.val_size,
                                      args, Path(scratch) / rule)
            steps = [0, args.val_every, summary["steps"]]
            row = [method, summary["steps"], summary["step_time_ms_median"]]
            row += [float(validation.loc[step, "val/gt_v0_l1"]) for step in steps]
            row += [float(validation.loc[summary["steps"], f"val/{name}"]) for name in ("gt_v_l1", "marker_loss")]
            table.append(row)
            print(f"{method}: {row}", file=sys.stderr)
            if args.paper_steps:
                paper, _ = run(rule, 64, 64, args.paper_steps, args.paper_steps, 8, args, Path(scratch) / f"{rule}-64")
                paper_rows.append([method, paper["steps"], paper["step_time_ms_median"] / 1e3])

    header = ["method", "steps", "median step (ms)", "val gt_v0_l1 @0", f"val gt_v0_l1 @{args.val_every}",
              "val gt_v0_l1 @end", "val gt_v_l1 @end", "val marker loss @end"]
    text = "\n".join([
        "## Fluid: SIP vs Adam at reduced size",
        "",
        f"{args.resolution}x{args.resolution} grid on the paper's 128x128 periodic domain, 8 steps of dt = 0.25, "
        f"batch {args.batch}, U-Net 5 levels (16 maps), inner/network optimizer Adam {PAPER_LR:g} for both, seed "
        f"{args.seed} (same initial network and data), {args.val_size} held-out examples. gt_v0_l1: sum over cells "
        "of |v0 - v0*| (lower is better); gt_v_l1: the same summed over the 9 frames of the trajectory; marker "
        "loss: the Fourier-weighted objective. SIP regresses onto the reverse-simulation estimate (uniform "
        "flow + central vortex); Adam back-propagates the marker loss through all 8 steps. Median step time is "
        "start to start of training steps (data generation included); compare step times within one run of this "
        "script only, as they vary by tens of percent between runs on a shared machine.",
        "",
        markdown_table(header, table),
        "",
        *([f"Step time at the paper's size (64x64, batch 64, U-Net 5 levels), median over {args.paper_steps} steps:",
           "", markdown_table(["method", "steps", "median step (s)"], paper_rows), ""] if paper_rows else []),
        *provenance("bench/fluid.py"),
    ])
    print(text)
    if args.write:
        write_section(args.write, "fluid", text)


if __name__ == "__main__":
    main()
