"""Ensembles against sequential runs: member-updates per second of K members trained as one vectorised
ensemble and of the same K members trained one after another (the bare update of a single run), and the
wall time of a whole sine sweep with the basic, joblib and ensemble launchers.

    python bench/ensemble.py --threads 1 --sizes 1 4 16 64 256 --out bench/ensemble_results.md
    python bench/ensemble.py --sweep-jobs 48      # also the sweep's wall time (minutes)

Interleaved: each round times the ensemble and the sequential runs of every K back to back, so a busy
machine slows both alike; the table gives medians over rounds. Data generation is included in both.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _report import REPO, markdown_table, provenance, publish
from hydra.utils import instantiate

from sip_train.config import compose_config
from sip_train.ensemble.engine import EnsembleUpdate
from sip_train.ensemble.problem import fold_batches
from sip_train.components import build_components
from sip_train.rules.base import PlainStep

PROBLEMS = {  # name: overrides (a U-Net problem keeps batch-norm buffers: it runs as single jobs)
    "sine": ["problem=sine", "optimizer=adam"],
    "exp": ["problem=exp", "optimizer=adam"],
    "oscillators": ["problem=oscillators", "optimizer=adam"],
    "sine-sip": ["problem=sine", "optimizer=sip"],
}


def members(overrides: list[str], k: int):
    """K members of one problem and rule (seeds 0 ... K-1): their problem, network, rule and data."""
    built = []
    for seed in range(k):
        cfg = compose_config([*overrides, "logger=csv", f"seed={seed}"], tempfile.gettempdir())
        problem, network, rule = build_components(cfg.problem, cfg.optimizer, cfg.network, seed)
        built.append((problem, network, rule, instantiate(cfg.data, problem=problem, seed=seed)))
    return built


def ensemble_rate(built, updates: int) -> float:
    """Member-updates per second of the members trained as one ensemble."""
    update = EnsembleUpdate([built[0][0]] * len(built), [b[1] for b in built], [b[2] for b in built], torch.device("cpu"))
    start = time.perf_counter()
    for step in range(updates):
        batch = fold_batches([data.train_batch(step, torch.device("cpu")) for *_, data in built])
        update.update(step + 1, *batch[1:])  # y* and the observed inputs
    return len(built) * updates / (time.perf_counter() - start)


def sequential_rate(built, updates: int) -> float:
    """Member-updates per second of the members trained one after another (a single run's bare update)."""
    start = time.perf_counter()
    for problem, network, rule, data in built:
        step_interface = PlainStep(problem, network, rule)
        for step in range(updates):
            rule.training_step(step_interface, *data.train_batch(step, torch.device("cpu"))[1:])
    return len(built) * updates / (time.perf_counter() - start)


def throughput(sizes: list[int], rounds: int, budget: int) -> str:
    rows = []
    for name, overrides in PROBLEMS.items():
        for k in sizes:
            updates = max(5, budget // k)
            ratios, ens, seq = [], [], []
            for _ in range(rounds):
                e = ensemble_rate(members(overrides, k), updates)
                s = sequential_rate(members(overrides, min(k, 4)), updates)  # per-member rate does not depend on K
                ens.append(e), seq.append(s), ratios.append(e / s)
            rows.append([name, k, f"{statistics.median(ens):,.0f}", f"{statistics.median(seq):,.0f}",
                         f"{statistics.median(ratios):.1f}x"])
            print(rows[-1], flush=True)
    return markdown_table(["problem", "K", "ensemble member-updates/s", "sequential member-updates/s", "speed-up"],
                          rows)


def sweep_time(jobs: int, launcher: list[str]) -> float:
    """Wall time of a plain `train.py -m` sweep of `jobs` sine jobs (seeds x lr) with a launcher."""
    seeds = ",".join(str(s) for s in range(jobs // 2))
    with tempfile.TemporaryDirectory() as directory:
        command = [sys.executable, "train.py", "-m", "problem=sine", "optimizer=adam", f"seed={seeds}",
                   "optimizer.lr=1e-3,3e-3", "logger=csv", "trainer.max_steps=1000", "trainer.val_check_interval=500",
                   "trainer.enable_progress_bar=false", f"hydra.sweep.dir={directory}", *launcher]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=2000, help="member-updates per measurement (at least 5 updates)")
    parser.add_argument("--sweep-jobs", type=int, default=0, help="also time a sweep of this many sine jobs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = [f"### Ensembles, {args.threads} thread(s)", "", *provenance("bench/ensemble.py"), "",
            throughput(args.sizes, args.rounds, args.budget)]
    if args.sweep_jobs:
        launchers = {"basic": [], "joblib (2 processes)": ["hydra/launcher=joblib_1thread"],
                     "ensemble": ["hydra/launcher=ensemble"]}
        rows = [[name, f"{sweep_time(args.sweep_jobs, extra):.0f}"] for name, extra in launchers.items()]
        text += ["", f"{args.sweep_jobs} sine jobs of 1,000 steps (`train.py -m`, CSV logging):", "",
                 markdown_table(["launcher", "wall time (s)"], rows)]
    publish("\n".join(text), args.out, f"Ensembles ({args.threads} thread)")


if __name__ == "__main__":
    main()
