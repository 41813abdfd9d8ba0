"""Inductor's CPU kernels with a boolean output against eager torch: the ReLU and its `<= 0` mask (what the
ReLU's backward keeps) on the activations of the sine ensemble at K = 64 (64 members x 100 examples x 32
units), one thread. Eager and compiled are interleaved round by round; medians of the rounds.

    python bench/inductor_masks.py --out BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from _report import markdown_table, median_ms, provenance, publish

#: name: the function timed (x, b) -> tensor(s).
KERNELS = {
    "relu(x + b)": lambda x, b: torch.relu(x + b),
    "x <= 0": lambda x, b: x <= 0,
    "relu(x + b) and its <= 0 mask": lambda x, b: (lambda y: (y, y <= 0))(torch.relu(x + b)),
    "relu(x + b) and 2 relu(x + b)": lambda x, b: (lambda y: (y, 2 * y))(torch.relu(x + b)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x, b = torch.randn(64, 100, 32, generator=generator), torch.randn(64, 1, 32, generator=generator)
    compiled = {name: torch.compile(kernel, dynamic=False) for name, kernel in KERNELS.items()}
    times = {name: ([], []) for name in KERNELS}
    for _ in range(args.rounds):
        for name, kernel in KERNELS.items():
            times[name][0].append(median_ms(lambda: kernel(x, b), args.repeats))
            times[name][1].append(median_ms(lambda: compiled[name](x, b), args.repeats))
    rows = [[name, f"{statistics.median(eager):.3f}", f"{statistics.median(inductor):.3f}",
             f"{statistics.median(inductor) / statistics.median(eager):.1f}x"] for name, (eager, inductor) in times.items()]
    table = markdown_table(["kernel on (64, 100, 32) float32", "eager (ms)", "compiled (ms)", "compiled / eager"], rows)
    print(table)
    publish("\n".join(["### Inductor kernels with a boolean output", "", *provenance("bench/inductor_masks.py"), "",
                       table]), args.out, "inductor-masks")


if __name__ == "__main__":
    main()
