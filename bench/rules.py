"""Cost and progress of every update rule on Poisson and heat (the paper's Fig. 15 at a reduced size).

Each (problem, rule) pair is a `python train.py` run from the same seed (same initial network,
same data), validated every `--val-every` steps. Reported: the median wall-clock time per training
step (start to start, so data generation and logging are included) as a ratio to Adam's on the
same problem, and the validation x_l1 after `--val-every` steps and at the end. The runs are
repeated `--repeats` times in turn (round robin) and each rule keeps its fastest median, so load
from other processes on a shared machine disturbs the ratios less; the runs are deterministic,
so x_l1 is the same in every round. Hessian-free runs once, for `--hf-steps` steps only: one of
its steps costs hundreds of Adam steps.

Learning rates are the paper's where it gives one for that problem and rule (SPEC.md), else the
rule's default from conf/optimizer.

    python bench/rules.py --resolution 32 --batch 32 --steps 100 --hf-steps 10 --repeats 3 \\
        --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, write_section  # noqa: E402
from sip_train.summary import read_summary  # noqa: E402

RULES = sorted(p.stem for p in (REPO / "conf" / "optimizer").glob("*.yaml"))
#: The paper's learning rates where they differ from the rule's default (appendix B.2, B.3).
PAPER_LR = {
    ("poisson", "sgd"): 3e-12,
    ("poisson", "adahessian"): 1e-6,
    **{("heat", rule): 1e-3 for rule in ("sgd", "adam", "adahessian", "sip")},
}


def run(problem: str, rule: str, steps: int, args: argparse.Namespace, run_dir: Path) -> dict:
    """Train one (problem, rule) pair with train.py; returns its summary with val x_l1 by step."""
    overrides = [
        f"problem={problem}", f"optimizer={rule}", f"problem.resolution={args.resolution}",
        f"data.batch_size={args.batch}", f"trainer.max_steps={steps}", f"trainer.val_check_interval={args.val_every}",
        "trainer.accelerator=cpu", "trainer.enable_progress_bar=false", "logger=csv", "figure_examples=0",
        f"threads={args.threads}", f"seed={args.seed}", f"hydra.run.dir={run_dir}",
    ]
    if (problem, rule) in PAPER_LR:
        overrides.append(f"optimizer.lr={PAPER_LR[problem, rule]}")
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    # a diverged run exits with an error but still writes its summary
    subprocess.run([sys.executable, "train.py", *overrides], cwd=REPO, env=environment, capture_output=True)
    summary = read_summary(run_dir)
    metrics = run_dir / "metrics.csv"  # absent when the rule refused the problem at start-up
    validation = pd.read_csv(metrics).dropna(subset=["val/x_l1"]) if metrics.is_file() else pd.DataFrame(
        {"step": [], "val/x_l1": []})
    summary["x_l1_by_step"] = dict(zip(validation["step"].astype(int), validation["val/x_l1"]))
    return summary


def final_x_l1(summary: dict) -> object:
    """The run's last validation x_l1, or why it has none (diverged, failed)."""
    if summary["status"] == "diverged":
        return f"diverged at step {summary['diverged_step']}"
    return summary["x_l1"] if summary["status"] == "completed" else summary["status"]


def rows(problem: str, summaries: dict[str, dict], args: argparse.Namespace) -> list[list[object]]:
    """Table rows of one problem: rule, lr, steps, step time, ratio to Adam, x_l1 at val_every and at the end."""
    adam_ms = summaries["adam"]["step_time_ms_median"]
    table = []
    for rule, summary in summaries.items():
        by_step, step_ms = summary["x_l1_by_step"], summary.get("step_time_ms_median")
        table.append([problem, rule, f"{summary['lr']:g}", summary["steps"], step_ms if step_ms else "-",
                      f"{step_ms / adam_ms:.2f}x" if step_ms else "-", by_step.get(0, "-"),
                      by_step.get(args.val_every, "-"), final_x_l1(summary)])
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", nargs="+", default=["poisson", "heat"])
    parser.add_argument("--rules", nargs="+", default=RULES, help="conf/optimizer options (adam is always run)")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--hf-steps", type=int, default=10, help="steps of the Hessian-free runs")
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of runs; each rule keeps its fastest")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help="replace the `rules` section of this Markdown file")
    args = parser.parse_args()
    rules = ["adam", *(r for r in args.rules if r != "adam")]

    summaries: dict[str, dict[str, dict]] = {problem: {} for problem in args.problems}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.repeats):
            for problem, rule in itertools.product(args.problems, rules):
                if round_ > 0 and rule == "hessian_free":
                    continue
                steps = args.hf_steps if rule == "hessian_free" else args.steps
                summary = run(problem, rule, steps, args, Path(scratch) / f"{problem}-{rule}-{round_}")
                print(f"round {round_} {problem}/{rule}: {summary['step_time_ms_median']:.1f} ms/step, "
                      f"x_l1 {final_x_l1(summary)}", file=sys.stderr)
                fastest = summaries[problem].get(rule, summary)
                if summary["x_l1"] != fastest["x_l1"]:
                    print(f"warning: {problem}/{rule} is not deterministic: x_l1 {summary['x_l1']} != "
                          f"{fastest['x_l1']}", file=sys.stderr)
                summaries[problem][rule] = min(fastest, summary, key=lambda s: s["step_time_ms_median"])
    table = [row for problem in args.problems for row in rows(problem, summaries[problem], args)]

    header = ["problem", "rule", "lr", "steps", "median step (ms)", "step / Adam", "val x_l1 @0",
              f"val x_l1 @{args.val_every}", "val x_l1 @end"]
    text = "\n".join([
        "## Update rules: step time and progress (Fig. 15 at reduced size)",
        "",
        f"{args.resolution}x{args.resolution} grids, batch {args.batch}, U-Net (4 levels, 16 maps), CPU, one "
        f"`train.py` run per row from seed {args.seed} (same initial network and data for every rule); "
        f"{args.steps} steps ({args.hf_steps} for Hessian-free). Median step time is start to start of training "
        f"steps (data, update, logging), the fastest of {args.repeats} round-robin repeats (Hessian-free: one run); "
        "`step / Adam` is its ratio to Adam's on the same problem. Validation x_l1 "
        "(sum over cells of |x - x*|, mean over 128 held-out examples) at step 0, after "
        f"{args.val_every} steps and at the end. Learning rates: the paper's for that problem and rule where it "
        "gives one, else the rule's default.",
        "",
        markdown_table(header, table),
        "",
        *provenance("bench/rules.py"),
    ])
    print(text)
    if args.write:
        write_section(args.write, "rules", text)


if __name__ == "__main__":
    main()
