"""Adam vs SIP on poisson and heat: validation x_l1 after several step counts, and step times.

Both rules start from the same initial network (same seed) and see the same data stream.

    python bench/adam_vs_sip.py --resolution 32 --batch 32 --steps 400 --every 100 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, provenance, write_section  # noqa: E402

from sip_train.config import compose_config  # noqa: E402
from sip_train.run import train  # noqa: E402


def run(problem: str, rule: str, args: argparse.Namespace, run_dir: Path) -> tuple[pd.Series, float]:
    """Train one (problem, rule); returns val x_l1 indexed by step, and the median step time in ms."""
    overrides = [f"problem={problem}", f"optimizer={rule}", f"problem.resolution={args.resolution}",
                 f"data.batch_size={args.batch}", f"trainer.max_steps={args.steps}", f"seed={args.seed}",
                 f"trainer.val_check_interval={args.every}", "logger=csv", "trainer.enable_progress_bar=false",
                 "figure_examples=0", f"threads={args.threads}", f"trainer.accelerator={args.accelerator}"]
    summary = train(compose_config(overrides, run_dir))
    metrics = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["val/x_l1"])
    return metrics.set_index("step")["val/x_l1"], summary["step_time_ms_median"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--every", type=int, default=100, help="validate every N steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--write", type=Path, help="Markdown file whose `adam_vs_sip` section receives the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows, timing_rows = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for problem in ("poisson", "heat"):
            results = {rule: run(problem, rule, args, Path(scratch) / f"{problem}-{rule}") for rule in ("adam", "sip")}
            (adam_curve, adam_ms), (sip_curve, sip_ms) = results["adam"], results["sip"]
            for step in adam_curve.index:
                rows.append([problem, int(step), adam_curve[step], sip_curve[step], sip_curve[step] / adam_curve[step]])
            timing_rows.append([problem, adam_ms, sip_ms, sip_ms / adam_ms])
    accuracy = markdown_table(["problem", "step", "Adam val x_l1", "SIP val x_l1", "SIP / Adam"], rows)
    timing = markdown_table(["problem", "Adam step (ms)", "SIP step (ms)", "SIP / Adam"], timing_rows)
    text = "\n".join([
        "## Adam vs SIP (core problems)", "",
        f"Resolution {args.resolution}x{args.resolution}, batch {args.batch}, seed {args.seed}, same initial "
        f"network and data for both rules; validation on 128 fixed examples. Step time: median over all steps "
        "(start-to-start, including data generation and logging).", "",
        accuracy, "", timing, "", *provenance("bench/adam_vs_sip.py")])
    print(text)
    if args.write is not None:
        write_section(args.write, "adam_vs_sip", text)


if __name__ == "__main__":
    main()
