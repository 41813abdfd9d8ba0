"""Ensembles against sequential runs: member-updates per second of K members trained as one vectorised
ensemble and of the same members trained one after another (a single run's bare update), eager and compiled;
and the wall time of a whole sine sweep with the basic, joblib and ensemble launchers (and W&B's cost).

    python bench/ensemble.py --threads 1 2 --sweep-jobs 48 --out BENCHMARKS.md
    python bench/ensemble.py --sweep-jobs 48 --no-throughput --out BENCHMARKS.md     (the sweeps only)

Interleaved: each round times the sequential update and the ensemble of every K back to back, so a busy machine
slows both alike; the table gives medians over rounds of the rates and of the per-round ratios. A sequential
run's rate does not depend on K (K runs one after another take K times as long), so it is measured on one run
per round. Data generation is included in both. Compiled variants are timed after their compilation (the first
updates, not timed) and only where `--compiled` names them: Inductor takes a minute or more per graph on a
shared 2-core CPU.
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
from typing import Callable, Iterator

import torch
from _report import REPO, markdown_table, provenance, publish
from hydra.utils import instantiate

from sip_train.compiled import CompiledUpdate, update_compile_options
from sip_train.components import build_components
from sip_train.config import compose_config
from sip_train.ensemble.engine import EnsembleUpdate
from sip_train.ensemble.problem import fold_batches
from sip_train.rules.base import PlainStep

CPU = torch.device("cpu")
#: name: (overrides, member-updates per measurement, largest K). The U-Net runs without batch norm (whose
#: statistics are buffers that an ensemble cannot update per member), on a 16 x 16 Poisson problem.
PROBLEMS = {
    "sine": (["problem=sine", "optimizer=adam"], 1500, 256),
    "exp": (["problem=exp", "optimizer=adam"], 1000, 256),
    "oscillators": (["problem=oscillators", "optimizer=adam"], 200, 256),
    "poisson U-Net": (["problem=poisson", "optimizer=adam", "problem.resolution=16", "network=unet",
                       "network.batch_norm=false", "network.levels=2", "data.batch_size=8"], 40, 256),
}
WARMUP = 3  # untimed updates first (the compiled variants compile in them)
torch._dynamo.config.recompile_limit = 64  # the compiled updates of every K share one code object: one entry each

Stepper = Callable[[int], None]  # makes n more updates


def members(overrides: list[str], k: int) -> list[tuple]:
    """K members of one problem and rule (seeds 0 ... K-1): their problem, network, rule and data."""
    built = []
    cfg = compose_config([*overrides, "logger=csv"], tempfile.gettempdir())
    for seed in range(k):
        problem, network, rule = build_components(cfg.problem, cfg.optimizer, cfg.network, seed)
        built.append((problem, network, rule, instantiate(cfg.data, problem=problem, seed=seed)))
    return built


def ensemble_stepper(built: list[tuple], compiled: bool, device: torch.device = CPU) -> Stepper:
    """The members trained as one ensemble (all members share the first one's problem)."""
    update = EnsembleUpdate([built[0][0]] * len(built), [b[1] for b in built], [b[2] for b in built], device,
                            {} if compiled else None)
    step = 0

    def run(updates: int) -> None:
        nonlocal step
        for _ in range(updates):
            batch = fold_batches([data.train_batch(step, device) for *_, data in built])
            update.update(step + 1, *batch[1:])  # y* and the observed inputs
            step += 1
    return run


def single_stepper(member: tuple, compiled: bool, device: torch.device = CPU) -> Stepper:
    """One member's single run: `rule.training_step`, or compile=true's whole compiled update."""
    problem, network, rule, data = member
    plain = PlainStep(problem.to(device), network.to(device), rule)
    whole = CompiledUpdate(plain, rule, plain.optimizer(), update_compile_options({}, device)) if compiled else None
    step = 0

    def run(updates: int) -> None:
        nonlocal step
        for _ in range(updates):
            batch = data.train_batch(step, device)[1:]
            whole(*batch) if whole is not None else rule.training_step(plain, *batch)
            step += 1
    return run


def rate(stepper: Stepper, updates: int, k: int, device: torch.device = CPU) -> float:
    """Member-updates per second of `updates` updates of a stepper that updates k members at a time."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    stepper(updates)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return k * updates / (time.perf_counter() - start)


def speedups(name: str, ks: list[int], compiled: bool, rounds: int, device: torch.device = CPU) -> list[list]:
    """Rows (problem, mode, K, ensemble rate, sequential rate, speed-up with each round's) of one problem of
    PROBLEMS: the ensembles of every K and one single run, interleaved round by round."""
    overrides, budget, _ = PROBLEMS[name]
    torch._dynamo.reset()
    single = single_stepper(members(overrides, 1)[0], compiled, device)
    ensembles = {k: ensemble_stepper(members(overrides, k), compiled, device) for k in ks}
    single(WARMUP)
    for stepper in ensembles.values():
        stepper(WARMUP)
    measured: dict[int, tuple[list, list, list]] = {k: ([], [], []) for k in ks}
    for _ in range(rounds):
        sequential = rate(single, max(WARMUP, budget // 4), 1, device)
        for k, stepper in ensembles.items():
            together = rate(stepper, max(WARMUP, budget // k), k, device)
            ens, seq, ratio = measured[k]
            ens.append(together), seq.append(sequential), ratio.append(together / sequential)
    rows = []
    for k, (ens, seq, ratio) in measured.items():
        rows.append([name, "compiled" if compiled else "eager", k, f"{statistics.median(ens):,.0f}",
                     f"{statistics.median(seq):,.0f}",
                     f"{statistics.median(ratio):.1f}x ({', '.join(f'{r:.1f}' for r in ratio)})"])
        print(rows[-1], flush=True)
    return rows


HEADER = ["problem", "mode", "K", "ensemble member-updates/s", "sequential member-updates/s", "speed-up (rounds)"]


def throughput(sizes: list[int], rounds: int, compiled: set[str], compiled_sizes: list[int],
               threads: int) -> Iterator[tuple[str, list[str]]]:
    """The speed-up table at `threads` torch threads and notes on what was not run, after each problem (a long
    run that fails leaves what it measured)."""
    torch.set_num_threads(threads)
    rows, notes = [], []
    for name, (_, _, largest) in PROBLEMS.items():
        ks = [k for k in sizes if k <= largest]
        if len(ks) < len(sizes):
            notes.append(f"{name}: K > {largest} not run (time)")
        rows += speedups(name, ks, False, rounds)
        if name in compiled:
            notes.append(f"{name} compiled: K = {', '.join(map(str, compiled_sizes))} only (Inductor's compile time)")
            rows += speedups(name, [k for k in ks if k in compiled_sizes], True, rounds)
        yield markdown_table(HEADER, rows), notes


def sweep_time(jobs: int, launcher: list[str], logger: str = "csv", figures: bool = True,
               keep: Path | None = None) -> float:
    """Wall time of a plain `train.py -m` sweep of `jobs` sine jobs (seeds x lr) with a launcher, one thread per
    process; without validation figures where `figures` is false; its run directories left in `keep` if given."""
    seeds = ",".join(str(s) for s in range(jobs // 2))
    with tempfile.TemporaryDirectory() as scratch:
        directory = str(keep or scratch)
        command = [sys.executable, "train.py", "-m", "problem=sine", "optimizer=adam", f"seed={seeds}",
                   "optimizer.lr=1e-3,3e-3", f"logger={logger}", "trainer.max_steps=1000",
                   "trainer.val_check_interval=500", "trainer.enable_progress_bar=false",
                   f"hydra.sweep.dir={directory}", *launcher, *([] if figures else ["figure_examples=0"])]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"})
        seconds = time.perf_counter() - start
        finished = len(list(Path(directory).glob("**/summary.json")))
        if done.returncode or finished != jobs:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise RuntimeError(f"exit {done.returncode}, {finished} of {jobs} summaries: {tail}")
        return seconds


ENSEMBLE = ["hydra/launcher=ensemble"]
#: name: (launcher overrides, logger, validation figures). The CSV and W&B ensembles run back to back, twice.
SWEEPS = {"basic": ([], "csv", True),
          "joblib (2 processes)": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "csv", True),
          "ensemble": (ENSEMBLE, "csv", True),
          "ensemble, 2 groups of 24 over joblib (2 processes)":
              ([*ENSEMBLE, "hydra.launcher.max_members=24", "hydra/launcher/inner=joblib", "hydra.launcher.inner.n_jobs=2"],
               "csv", True),
          "ensemble, W&B offline": (ENSEMBLE, "wandb", True),
          "basic, no validation figures": ([], "csv", False),
          "ensemble, no validation figures": (ENSEMBLE, "csv", False)}
WANDB_PAIRS = 2


def figure_seconds(run_dir: Path, repeats: int = 5) -> tuple[float, float]:
    """Median seconds to draw and save, in this process, one sine validation figure (three examples, as
    a run draws them) and the learning-curve figure of the finished run `run_dir` (from its metrics.csv)."""
    from sip_train.learning_curves import draw_learning_curves
    from sip_train.validation_figures import save_validation_figure

    cfg = compose_config(["problem=sine", "optimizer=adam", "logger=csv"], tempfile.gettempdir())
    problem = build_components(cfg.problem, cfg.optimizer, cfg.network, 0)[0]
    x_true, y_target = problem.sample(3, torch.Generator().manual_seed(0))[:2]
    x = x_true + 0.1 * torch.randn(x_true.shape, generator=torch.Generator().manual_seed(1))
    with tempfile.TemporaryDirectory() as directory:
        def validation_figure() -> None:
            save_validation_figure(problem.figure(x, x_true, problem.simulate(x), y_target), directory, 500,
                                   "sine/adam", None, "x_l1", 0.1)
        timings = []
        for draw in (validation_figure, lambda: draw_learning_curves(run_dir)):
            draw()  # warm-up: fonts and caches
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                draw()
                times.append(time.perf_counter() - start)
            timings.append(statistics.median(times))
    return timings[0], timings[1]


def sweeps(jobs: int) -> str:
    """The sweep table: each launcher's wall time against basic's, W&B's cost per member (the median
    difference of WANDB_PAIRS back-to-back pairs of the CSV and W&B ensembles), and what the figures every job
    draws cost (which bounds what any launcher can gain while keeping them)."""
    seconds: dict[str, list[float]] = {name: [] for name in SWEEPS}
    order = [*SWEEPS] + ["ensemble", "ensemble, W&B offline"] * (WANDB_PAIRS - 1)
    with tempfile.TemporaryDirectory() as kept:
        for name in order:
            extra, logger, figures = SWEEPS[name]
            keep = Path(kept) if name == "basic" else None
            seconds[name].append(sweep_time(jobs, extra, logger, figures, keep))
            print(name, f"{seconds[name][-1]:.0f} s", flush=True)
        validation_s, curves_s = figure_seconds(Path(kept) / "0")
    per_job = 3 * validation_s + curves_s  # validations at steps 0, 500 and 1000, the curves at the end
    basic = {True: seconds["basic"][0], False: seconds["basic, no validation figures"][0]}
    rows = [[name, " / ".join(f"{value:.0f}" for value in values),
             f"{basic[SWEEPS[name][2]] / statistics.median(values):.1f}x"] for name, values in seconds.items()]
    wandb_cost = statistics.median(w - c for c, w in zip(seconds["ensemble"], seconds["ensemble, W&B offline"])) / jobs
    return "\n".join([f"{jobs} sine jobs of 1,000 steps (`train.py -m ... seed=0..{jobs // 2 - 1} optimizer.lr=1e-3,3e-3`, "
                      "validation every 500 steps, one torch thread per process; each run's times listed; "
                      "the rows without validation figures are compared with basic without them):", "",
                      markdown_table(["launcher", "wall time (s)", "vs basic"], rows), "",
                      f"W&B (offline) costs the ensemble {wandb_cost:.2f} s per member more than CSV logging "
                      f"(median of {WANDB_PAIRS} back-to-back pairs).", "",
                      f"Figures every job draws, timed alone in this process (median of 5): a sine validation "
                      f"figure {validation_s:.2f} s, the learning-curve figure {curves_s:.2f} s; three "
                      f"validations and the curves make {per_job:.1f} s per job, against basic's "
                      f"{seconds['basic'][0] / jobs:.1f} s per job in all. A launcher that keeps every job's "
                      f"figures is therefore at most {seconds['basic'][0] / (jobs * per_job):.1f}x faster "
                      "than basic on one thread, however fast it trains."])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compiled", nargs="*", default=["sine"], choices=list(PROBLEMS),
                        help="problems also timed compiled (Inductor), at the first thread count only")
    parser.add_argument("--compiled-sizes", type=int, nargs="*", default=[64], help="the K timed compiled")
    parser.add_argument("--sweep-jobs", type=int, default=0, help="also time a sweep of this many sine jobs")
    parser.add_argument("--no-throughput", action="store_true", help="time the sweeps only")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.sweep_jobs:  # a section of its own (with its own command line): it can be measured again alone
        torch.set_num_threads(1)
        publish("\n".join(["### Whole sweeps", "", *provenance("bench/ensemble.py"), "", sweeps(args.sweep_jobs)]),
                args.out, "ensemble-sweeps")
    if args.no_throughput:
        return
    text = ["### Member-updates per second", "", *provenance("bench/ensemble.py"), ""]
    for threads in args.threads:  # the section is written after each problem: a long run leaves what it measured
        first = threads == args.threads[0]
        for table, notes in throughput(args.sizes, args.rounds, set(args.compiled) if first else set(),
                                       args.compiled_sizes, threads):
            part_text = [f"#### {threads} torch thread(s), load average "
                         + "/".join(f"{load:.1f}" for load in os.getloadavg()) + " after it", "", table, "",
                         *[f"- {note}" for note in notes], ""]
            publish("\n".join(text + part_text), args.out, "ensemble")
        text += part_text


if __name__ == "__main__":
    main()
