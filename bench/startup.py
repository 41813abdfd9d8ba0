"""Start-up of the commands that do no training: `--help`, a configuration error and `sip-sweep --list`, each a
fresh process, interleaved round by round with `python -c "import torch"` (the bar they must stay under), so
the machine's load falls on all of them alike. Wall-clock and CPU time (user + system of the process tree).

    python bench/startup.py --rounds 10 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, publish  # noqa: E402


def commands(sweep_dir: str) -> dict[str, list[str]]:
    python = sys.executable
    return {
        'python -c "import torch"': [python, "-c", "import torch"],
        "python train.py --help": [python, "train.py", "--help"],
        "python train.py problem=poison (exit 2)": [python, "train.py", "problem=poison"],
        "python train.py optimizer.lrr=1e-3 (exit 2)": [python, "train.py", "optimizer.lrr=1e-3"],
        "python sweep.py sweep=heat_methods --list": [python, "sweep.py", "sweep=heat_methods", "--list",
                                                       f"hydra.sweep.dir={sweep_dir}"],
    }


def timed(command: list[str]) -> tuple[float, float]:
    """(wall-clock s, CPU s of the process and its children) of one run of `command`, output discarded."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = os.times()
    return wall, (after.children_user - before.children_user) + (after.children_system - before.children_system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--write", type=Path, help="write the section into this file (BENCHMARKS.md)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as sweep_dir:
        runs = commands(sweep_dir)
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for _ in range(args.rounds + 1):  # the first round warms the file cache and is dropped
            for name, command in runs.items():
                samples[name].append(timed(command))
    bar = statistics.median(wall for wall, _ in samples['python -c "import torch"'][1:])
    rows = []
    for name, values in samples.items():
        wall = statistics.median(w for w, _ in values[1:])
        cpu = statistics.median(c for _, c in values[1:])
        rows.append([name, wall, cpu, f"{wall / bar:.2f}"])
    text = "\n".join([
        "## Start-up of commands that do not train",
        "",
        "Each command a fresh process, interleaved round by round with `import torch` (after one warm-up round);",
        "medians over the rounds. Only Hydra and OmegaConf load before the command line is understood; torch,",
        "Lightning, scipy, wandb and matplotlib load when a run, evaluation or report starts.",
        "",
        *provenance("bench/startup.py"),
        f"- rounds: {args.rounds}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "",
        markdown_table(["command", "wall s (median)", "CPU s (median)", "wall / import torch"], rows),
    ])
    publish(text, args.write, "startup")


if __name__ == "__main__":
    main()
