"""Scale invariance on the sine problem (the paper's Fig. 5d at a reduced step budget).

For each conditioning factor xi (phi fixed), SIP (saddle-free Newton, L1 proxy, inner Adam 1e-3:
the paper's configuration) and Adam (1e-3) train the paper's MLP 32-64-32 from the same initial
weights on the same stream of targets for a fixed number of steps. Reported: the relative accuracy
||x - x*||_2 / xi (x* the solution nearest to the prediction) on a fixed held-out set of targets,
at the start and at the end, and the mean over the last 10 % of training batches (the paper's
read-out), each averaged over seeds. The paper's claim: SIP's relative accuracy stays flat as xi
grows while Adam's degrades.

The loop is plain PyTorch over the framework's own objects (problem, update rule, network built
from conf/ as `train.py` builds them), so thousands of steps cost seconds.

    python bench/sine_scale_invariance.py --xi 1 10 100 --steps 2000 --seeds 0 1 2 --threads 1 \\
        --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, write_section  # noqa: E402
from sip_train.module import build_components  # noqa: E402

METHODS = {
    "SIP (L1 proxy)": ["optimizer=sip", "optimizer.proxy_norm=l1", "optimizer.lr=1e-3"],
    "Adam": ["optimizer=adam", "optimizer.lr=1e-3"],
}


def compose_run(xi: float, phi: float, method: str) -> tuple:
    """Problem, network (built after seeding, so identical across methods) and rule blocks of one run."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["problem=sine", f"problem.xi={xi}", f"problem.phi={phi}", *METHODS[method]])
    return cfg.problem, cfg.optimizer, cfg.network


def train_run(xi: float, phi: float, method: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train one network; returns rel. accuracy at start / end on the held-out set, the mean over
    the last 10 % of training batches, and the median step time in ms."""
    problem, network, rule = build_components(*compose_run(xi, phi, method), seed)
    optimizer = rule.make_optimizer(network.parameters())
    validation = torch.Generator().manual_seed(10_000 + seed)
    x_val, y_val = problem.sample(args.val_size, validation)
    stream = torch.Generator().manual_seed(seed)

    def held_out() -> float:
        with torch.no_grad():
            x = problem.prepare_prediction(network(problem.network_input(y_val)), y_val)
            return problem.metrics(x, x_val, problem.simulate(x), y_val)["rel_accuracy"].mean().item()

    start, tail, times = held_out(), [], []
    for step in range(args.steps):
        began = time.perf_counter()
        x_true, y_target = problem.sample(args.batch, stream)
        x = problem.prepare_prediction(network(problem.network_input(y_target)), y_target)
        per_example, y = rule.objective(problem, x, y_target)
        optimizer.zero_grad()
        problem.reduce(per_example).backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
        if step >= args.steps - max(1, args.steps // 10):
            tail.append(problem.metrics(x.detach(), x_true, y, y_target)["rel_accuracy"].mean().item())
    return {"start": start, "end": held_out(), "tail": statistics.mean(tail), "ms": 1e3 * statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--xi", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--phi", type=float, default=45.0, help="coupling angle in degrees")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="replace the `sine_scale_invariance` section of this Markdown file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    table = []
    for xi in args.xi:
        for method in METHODS:
            runs = [train_run(xi, args.phi, method, seed, args) for seed in args.seeds]
            mean = {key: statistics.mean(run[key] for run in runs) for key in runs[0]}
            spread = statistics.pstdev(run["end"] for run in runs)
            table.append([f"{xi:g}", method, mean["start"], mean["end"], spread, mean["tail"], mean["ms"]])
            print(f"xi {xi:g} {method}: {mean}", file=sys.stderr)

    header = ["xi", "method", "rel. acc. @0", f"rel. acc. @{args.steps}", "std over seeds",
              "last 10 % of training", "median step (ms)"]
    text = "\n".join([
        "## Sine: scale invariance (Fig. 5d at a reduced step budget)",
        "",
        f"phi = {args.phi:g} degrees, gamma = 10, batch {args.batch}, MLP 32-64-32 ReLU, {args.steps} steps, "
        f"seeds {args.seeds} (same initial network and targets for both methods). Relative accuracy "
        "||x - x*||_2 / xi, x* the solution nearest to the prediction: on "
        f"{args.val_size} held-out targets at the start and the end (mean over seeds, and its spread), and "
        "averaged over the training batches of the last 10 % of steps (the paper's read-out). Lower is "
        "better. SIP: saddle-free Newton with loss-change limit 0.2 on the L1 proxy, inner Adam 1e-3; Adam: 1e-3 "
        "through the physics. Plain PyTorch loop over the framework's problem, rule and network.",
        "",
        markdown_table(header, table),
        "",
        *provenance("bench/sine_scale_invariance.py"),
    ])
    print(text)
    if args.write:
        write_section(args.write, "sine_scale_invariance", text)


if __name__ == "__main__":
    main()
