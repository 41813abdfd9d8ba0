"""Small problems at bare-loop speed (issue 15): a `train.py` training step against a minimal PyTorch loop
doing the same math, and against sip-train's bare loop, interleaved in one run, per problem and rule.

The real `train(cfg)` runs (CSV logger, checkpoints, divergence guard, logging every 10 steps) at the
paper's sizes; every `block` global steps its StepTimer times `block` steps of each loop (bench/_loops.py):
the minimal loop (one generator, `problem.sample`, `rule.training_step` through the StepInterface) and the
bare loop (sip-train's per-step data stream, objective, backward, step). All include data generation.

    python bench/minimal_loop.py --blocks 30 --block 20 --warmup 100 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loops import (BareLoop, MinimalLoop, available_problems, check, fmt, lightning_vs_loops, quiet,  # noqa: E402
                    spread, trainable_rules, use_cpu_clock)
from _report import REPO, markdown_table, provenance, publish  # noqa: E402

PROBLEMS = ("sine", "exp", "wavepacket", "oscillators")
RULES = ("adam", "sip")
TARGET = 1.15  # train.py step / minimal-loop step


def table(results: dict) -> str:
    rows = []
    for (problem, rule), result in results.items():
        minimal, bare, lightning = (spread(result[name])[0] for name in ("minimal", "bare", "lightning"))
        rows.append([problem, rule, result["summary"]["batch_size"], result["block"], fmt(result["minimal"]), fmt(result["bare"]),
                     fmt(result["lightning"]), check(result["ratios"]["minimal"], TARGET),
                     check(result["ratios"]["bare"], None), f"{lightning - minimal:+.3g}", len(result["lightning"])])
    return markdown_table(["problem", "rule", "batch", "steps per sample", "minimal loop ms [IQR]", "bare loop ms [IQR]",
                           "train.py ms per step [IQR]", "train.py / minimal, paired [IQR]",
                           "train.py / bare, paired [IQR]", "train.py - minimal (ms)", "samples"], rows)


def section(args: argparse.Namespace, results: dict, missing: list[str]) -> str:
    settings = f" with `{' '.join(args.set)}`" if args.set else ""
    return "\n".join([
        "## Small problems: train.py step vs a minimal PyTorch loop",
        "",
        f"CPU, {'process CPU time' if args.clock == 'cpu' else 'wall time'}, paper sizes (each problem's own "
        f"batch). `train(cfg)`{settings} runs (CSV logger, checkpoint callback, "
        "divergence guard, logging every 10 steps, no progress bar, each problem's own `updates_per_step` and "
        "`data.steps_per_draw`); every block of global steps (`steps per sample`: at least "
        f"{args.block} and at least one Lightning step) its timer runs as many steps of the minimal loop and of the "
        f"bare loop in rotating order; {args.blocks} samples each after {args.warmup} warm-up steps. A step is one optimizer "
        "update with its own batch (data generation included everywhere). Ratios are medians of paired samples "
        f"(each train.py sample over the loop's block just before it); ✓/✗ against the issue's ≤ {TARGET:g}."
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
        for rule in trainable_rules(problem, args.rules):
            results[problem, rule] = lightning_vs_loops(problem, rule, None, None, problem_args,
                                                        {"minimal": MinimalLoop, "bare": BareLoop}, *args.set)
            results[problem, rule]["block"] = problem_args.block
            print(table({(problem, rule): results[problem, rule]}), flush=True)
    text = section(args, results, missing)
    publish(text, args.write, "small_problems")


if __name__ == "__main__":
    main()
