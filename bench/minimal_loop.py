"""A `train.py` training step against a training loop written from scratch (bench/from_scratch.py: its own
data, physics, objective and update) and against sip-train's components without Lightning (PackageLoop),
interleaved in one run, per problem and rule: the cost of the framework and of the package's kernels.

The real `train(cfg)` runs (CSV logger, checkpoints, divergence guard, logging every 10 steps); every `block`
global steps its StepTimer times `block` steps of each loop (bench/_loops.py). All include data generation.

    python bench/minimal_loop.py --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loops import (PackageLoop, available_problems, check, fmt, is_grid_problem, lightning_vs_loops,  # noqa: E402
                    quiet, spread, use_cpu_clock)
from from_scratch import LOOPS  # noqa: E402
from _report import REPO, markdown_table, provenance, publish  # noqa: E402

PROBLEMS = tuple(LOOPS)
RULES = ("adam", "sip")
TARGETS = {"sine": 1.15, "heat": 1.05, "poisson": 1.05}  # train.py step / from-scratch step


def table(results: dict) -> str:
    rows = []
    for (problem, rule), result in results.items():
        scratch, lightning = (spread(result[name])[0] for name in ("scratch", "lightning"))
        rows.append([problem, rule, result["size"], result["block"], fmt(result["scratch"]), fmt(result["package"]),
                     fmt(result["lightning"]), check(result["ratios"]["scratch"], TARGETS[problem]),
                     check(result["ratios"]["package"], None), f"{lightning - scratch:+.3g}", len(result["lightning"])])
    return markdown_table(["problem", "rule", "grid, batch", "steps per sample", "from scratch ms [IQR]",
                           "package loop ms [IQR]", "train.py ms per step [IQR]", "train.py / scratch, paired [IQR]",
                           "train.py / package loop, paired [IQR]", "train.py - scratch (ms)", "samples"], rows)


def section(args: argparse.Namespace, results: dict, missing: list[str]) -> str:
    settings = f" with `{' '.join(args.set)}`" if args.set else ""
    return "\n".join([
        "## train.py step vs a training loop written from scratch",
        "",
        f"CPU, {'process CPU time' if args.clock == 'cpu' else 'wall time'}, grids {args.resolution}² with batch "
        f"{args.grid_batch}, sine with its own batch. `train(cfg)`{settings} runs (CSV logger, checkpoint callback, "
        "divergence guard, logging every 10 steps, no progress bar, each problem's own `updates_per_step` and "
        "`data.steps_per_draw`); every block of global steps (`steps per sample`: at least "
        f"{args.block} and at least one Lightning step) its timer runs as many steps of the from-scratch loop "
        f"(bench/from_scratch.py: own data, physics, objective, Adam; the grid problems share the network module) "
        f"and of the package loop (sip-train's data stream and `rule.training_step` without Lightning) in rotating "
        f"order; {args.blocks} samples each after {args.warmup} warm-up steps. A step is one optimizer "
        "update with its own batch (data generation included everywhere). Ratios are medians of paired samples "
        "(each train.py sample over the loop's block just before it); ✓/✗ against the targets (sine 1.15, heat and "
        "Poisson 1.05)."
        + (f" Not measured (no config): {', '.join(missing)}." if missing else ""),
        "",
        table(results),
        "",
        *provenance("bench/minimal_loop.py"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS))
    parser.add_argument("--rules", nargs="+", default=list(RULES))
    parser.add_argument("--blocks", type=int, default=30, help="timed samples per variant")
    parser.add_argument("--block", type=int, default=20, help="steps per timed sample")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps of each variant first")
    parser.add_argument("--resolution", type=int, default=64, help="cells per axis of the grid problems")
    parser.add_argument("--grid-batch", type=int, default=16, help="batch of the grid problems")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="cpu",
                        help="wall time, or this process's CPU time (robust to other processes on a shared CPU)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides of the train.py run")
    parser.add_argument("--write", type=Path, help="Markdown file whose section receives the results")
    args = parser.parse_args()
    args.device, args.progress_bar = "cpu", False
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    quiet()
    if args.clock == "cpu":
        use_cpu_clock()
    problems, missing = available_problems(args.problems)
    results = {}
    for problem in problems:
        # a sample spans at least one Lightning step: the problem's updates_per_step, or --set's
        updates = OmegaConf.from_dotlist([o for o in args.set if o.startswith("updates_per_step=")]).get(
            "updates_per_step", OmegaConf.load(REPO / "conf" / "problem" / f"{problem}.yaml").get("updates_per_step", 1))
        problem_args = argparse.Namespace(**{**vars(args), "block": max(args.block, updates)})
        grid = is_grid_problem(problem)
        resolution, batch = (args.resolution, args.grid_batch) if grid else (None, None)
        for rule in args.rules:
            results[problem, rule] = lightning_vs_loops(problem, rule, resolution, batch, problem_args,
                                                        {"scratch": LOOPS[problem], "package": PackageLoop}, *args.set)
            results[problem, rule]["block"] = problem_args.block
            results[problem, rule]["size"] = f"{resolution}², {batch}" if grid else "batch " + str(
                results[problem, rule]["summary"]["batch_size"])
            print(table({(problem, rule): results[problem, rule]}), flush=True)
    text = section(args, results, missing)
    publish(text, args.write, "minimal_loop")


if __name__ == "__main__":
    main()
