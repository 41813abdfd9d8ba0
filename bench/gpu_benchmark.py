"""GPU benchmark: poisson, heat and fluid at the paper's sizes with adam and sip, each Lightning run against
a bare PyTorch loop, SIP vs Adam vs the network, the host-device synchronisations of a step, and compile=true.
Needs a CUDA GPU (exits with an error otherwise); one command, within about 8 minutes on an H100:

    python bench/gpu_benchmark.py --write BENCHMARKS.md

Phases, most important first, each written to the `gpu_benchmark` section as soon as it ends; a phase that
would overrun --budget-s is skipped and said so:

0. no synchronisation: every problem x rule (poisson also with the paper's CG) trains 30 steps with
   `torch.cuda.set_sync_debug_mode("error")` around each step that neither logs nor checks for divergence;
   a step that synchronised is reported with its call (`sip_train.sync_audit.audit_run`);
1. synchronisation audit at the paper's sizes, `torch.cuda.set_sync_debug_mode("warn")` around the
   training steps of a Lightning run (26 steps: 2 log steps, 3 divergence checks, 1 validation) and of
   every warning counted with the line that raised it (bench/sync_audit.py);
2. Lightning vs bare loop: `train(cfg)` for `warmup + blocks * block + 1` steps with `block` bare-loop
   steps after every `block` Lightning steps, each block closed by `torch.cuda.synchronize()`; steps per
   second from the median block, peak GPU memory of the run;
3. bare-loop variants: Adam step, SIP step, the network's forward + backward, and the parts of a step;
4. the same Lightning-vs-bare comparison on a small grid (the framework's fixed host time per step);
5. compile=true vs eager (bench/compile.py): speed-up, compile time, difference of results;
6. ensembles (bench/ensemble.py): member-updates per second of K members trained as one vectorised ensemble
   against one single run, sine and oscillators, K up to 4,096, eager and compiled.

`--device cpu` with small sizes is a dry run of the script itself (the audit then uses the CPU stand-in):
    python bench/gpu_benchmark.py --device cpu --problems poisson --resolution 16 --batch 4 --blocks 2 \
        --block 2 --warmup 1 --compare-steps 1 --compile-blocks 1
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compile as compile_bench  # noqa: E402
import ensemble as ensemble_bench  # noqa: E402
import _loops  # noqa: E402
import overhead  # noqa: E402
import sync_audit  # noqa: E402
from _report import markdown_table, provenance, write_section  # noqa: E402
from sip_train.sync_audit import TRAINING, audit_run  # noqa: E402


class Budget:
    """Wall-clock left for the phases; a phase that would not fit is skipped."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds

    def allows(self, estimate_s: float) -> bool:
        return time.perf_counter() + estimate_s < self.deadline


def training_table(results: dict) -> str:
    """Steps per second of the Lightning run and its bare twin, their ratio, and peak memory."""
    rows = []
    for (problem, rule, size), result in results.items():
        lightning, bare = (_loops.spread(result[name])[0] for name in ("lightning", "bare"))
        rows.append([problem, rule, size, f"{1e3 / lightning:.1f}", f"{1e3 / bare:.1f}",
                     _loops.fmt(result["lightning"]), _loops.fmt(result["bare"]),
                     _loops.check(result["ratios"], overhead.TARGETS["lightning / bare"]),
                     f"{result['peak_mib']:.0f}", result["summary"]["steps"],
                     f"{result['summary']['x_l1']:.4g}" if result["summary"].get("x_l1") is not None else ""])
    return markdown_table(["problem", "rule", "grid, batch", "Lightning steps/s", "bare steps/s",
                           "Lightning ms/step [IQR]", "bare ms/step [IQR]", "Lightning / bare, paired [IQR]",
                           "peak GPU memory (MiB)", "Lightning steps", "val x_l1 at the end"], rows)


def sync_free(problem: str, rule: str, resolution: int | None, batch: int | None, args: argparse.Namespace,
              *extra: str) -> str:
    """30 steps with synchronisation refused outside log writes, validation and the divergence check: how many
    updates were checked, or the call that synchronised."""
    with tempfile.TemporaryDirectory() as scratch:
        cfg = _loops.run_config(problem, rule, resolution, batch, 30, Path(scratch), args, "trainer.val_check_interval=30",
                                "trainer.log_every_n_steps=10", "divergence_check_every=10", *extra)
        try:
            summary, tracker = audit_run(cfg, forbid=True, warmup=2)
        except RuntimeError as error:
            return f"✗ {error}"
    return f"✓ {tracker.counts[TRAINING]} steps" if summary["status"] == "completed" else f"✗ {summary['status']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    overhead.add_arguments(parser, blocks=20, block=10, device="cuda")
    parser.set_defaults(warmup=10)
    parser.add_argument("--small-grid", type=int, default=16, help="grid of the fixed-overhead comparison")
    parser.add_argument("--small-batch", type=int, default=4, help="batch of the fixed-overhead comparison")
    parser.add_argument("--compare-steps", type=int, default=5, help="compile: steps of each before timing")
    parser.add_argument("--compile-blocks", type=int, default=10, help="compile: timed samples per variant")
    parser.add_argument("--no-compile", action="store_true", help="skip the compile phase")
    parser.add_argument("--ensemble-sizes", type=int, nargs="*", default=[1, 16, 256, 1024, 4096],
                        help="ensembles: the K timed (none: skip the phase)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock for all phases")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU is visible (torch.cuda.is_available() is False); this benchmark needs one. "
                 "For the CPU measurements run bench/overhead.py and bench/compile.py.")
    budget = Budget(args.budget_s)
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = False  # the framework's default; same kernels for both loops
    _loops.quiet()
    problems, missing = _loops.available_problems(args.problems)
    results: dict[str, dict] = {"sync_free": {}, "audit": {}, "training": {}, "variants": {}, "small": {},
                                "compile": {}, "ensemble": []}
    skipped: list[str] = [f"{p} (no config)" for p in missing]

    def report() -> None:
        text = section(args, problems, results, skipped)
        if args.write is not None:
            write_section(args.write, "gpu_benchmark", text)
        print(text, flush=True)

    for problem in _loops.all_problems():
        resolution, batch = overhead.sizes(problem, args)
        solvers = [[], ["problem.solver=cg"]] if problem == "poisson" else [[]]  # cg: the paper's solver
        for rule in _loops.trainable_rules(problem, overhead.RULES):
            for extra in solvers:
                name = " ".join([f"{problem}/{rule}", *extra])
                results["sync_free"][name] = sync_free(problem, rule, resolution, batch, args, *extra)
    report()

    for problem in problems:
        resolution, batch = overhead.sizes(problem, args)
        for rule in overhead.RULES:
            sizes = argparse.Namespace(**{**vars(args), "resolution": resolution, "batch": batch})
            results["audit"][problem, rule, "off"] = sync_audit.audit(problem, rule, False, sizes)
    report()

    for problem in problems:
        resolution, batch = overhead.sizes(problem, args)
        for rule in overhead.RULES:
            if not budget.allows(30):
                skipped.append(f"Lightning vs bare {problem}/{rule} (budget)")
                continue
            on_gpu = args.device == "cuda"
            if on_gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            result = overhead.lightning_vs_bare(problem, rule, resolution, batch, args)
            result["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20 if on_gpu else float("nan")
            results["training"][problem, rule, overhead.size_label(resolution, batch)] = result
    report()

    for problem in problems:
        resolution, batch = overhead.sizes(problem, args)
        if not budget.allows(30):
            skipped.append(f"bare-loop variants {problem} (budget)")
            continue
        size = overhead.size_label(resolution, batch)
        results["variants"][problem, size] = overhead.bare_variants(problem, resolution, batch, args)
    report()

    small = argparse.Namespace(**{**vars(args), "blocks": 10})
    for problem in problems:
        for rule in overhead.RULES:
            if not budget.allows(20):
                skipped.append(f"small-grid Lightning vs bare {problem}/{rule} (budget)")
                continue
            size = f"{args.small_grid}², {args.small_batch}"
            results["small"][problem, rule, size] = overhead.lightning_vs_bare(
                problem, rule, args.small_grid, args.small_batch, small)
    report()

    if not args.no_compile:
        timing = argparse.Namespace(**{**vars(args), "blocks": args.compile_blocks})
        for problem in problems:
            resolution, batch = overhead.sizes(problem, args)
            for rule in ("sip", "adam"):
                if not budget.allows(240 if problem == "fluid" else 60):  # fluid: long unrolled graphs
                    skipped.append(f"compile {problem}/{rule} (budget)")
                    continue
                results["compile"][problem, rule, overhead.size_label(resolution, batch)] = compile_bench.compare(
                    problem, rule, resolution, batch, timing)
                report()
    report()

    device = torch.device(args.device)
    for problem in ("sine", "oscillators"):
        for compiled in (False, True):
            if not args.ensemble_sizes:
                break
            if not budget.allows(120 if compiled else 60):
                skipped.append(f"ensembles {problem}{' compiled' if compiled else ''} (budget)")
                continue
            results["ensemble"] += ensemble_bench.speedups(problem, args.ensemble_sizes, compiled, 2, device)
            report()
    if any(verdict.startswith("✗") for verdict in results["sync_free"].values()):
        sys.exit("error: a training step synchronised host and device (see the table above)")


def section(args: argparse.Namespace, problems: list[str], results: dict, skipped: list[str]) -> str:
    """The `gpu_benchmark` section of BENCHMARKS.md."""
    lines = [
        "## GPU benchmark (paper sizes)",
        "",
        f"{torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU dry run'}; problems "
        f"{', '.join(problems)} at 64x64 (batch 128; fluid 64) unless stated. Timed samples are blocks of "
        f"{args.block} steps closed by `torch.cuda.synchronize()`, {args.blocks} per variant after {args.warmup} warm-up steps; Lightning (real `train(cfg)`, CSV logger, "
        "checkpoint callback, divergence guard, logging every 10 steps, progress bar "
        f"{'on' if args.progress_bar else 'off'}) alternates block by block with a bare PyTorch loop of the same "
        "network, data, objective and optimizer. Peak memory is the run's (the Lightning module and its bare twin "
        "share the GPU; their steps never overlap). Targets: Lightning / bare ≤ 1.05; SIP ≤ 1.2x the network's "
        "forward + backward (poisson, heat); SIP ≤ Adam on poisson, ≤ 1.1x on heat and fluid."
        + (f" Skipped: {'; '.join(skipped)}." if skipped else ""),
        "",
    ]
    if results["sync_free"]:
        lines += ["### Training steps with synchronisation forbidden", "",
                  "`torch.cuda.set_sync_debug_mode(\"error\")` around every training step after two warm-up steps "
                  "that neither logs nor checks for divergence (30 steps, every problem and rule, poisson with "
                  "its spectral solver and with the paper's CG).", "",
                  markdown_table(["run", "result"], [list(item) for item in results["sync_free"].items()]),
                  ""]
    if results["audit"]:
        lines += ["### Host-device synchronisations (sync debug mode)", "",
                  sync_audit.table(results["audit"]), ""]
    if results["training"]:
        lines += ["### Training steps: Lightning vs bare loop", "", training_table(results["training"]), ""]
    if results["variants"]:
        lines += ["### SIP step vs Adam step vs the network's forward + backward", "",
                  overhead.variants_table(results["variants"]), ""]
    if results["small"]:
        lines += ["### Fixed per-step cost of the framework (small grid)", "",
                  overhead.overhead_table(results["small"]), ""]
    if results["compile"]:
        lines += ["### compile=true vs eager (bare loop)", "",
                  compile_bench.table(results["compile"], args.compare_steps), ""]
    if results["ensemble"]:
        lines += ["### Ensembles against sequential runs", "",
                  "Member-updates per second of K members trained as one vectorised ensemble against one single "
                  "run's bare update (its rate times K for K runs one after another), data generation included, "
                  "interleaved over 2 rounds (bench/ensemble.py's `speedups`).", "",
                  markdown_table(ensemble_bench.HEADER, results["ensemble"]), ""]
    lines += provenance("bench/gpu_benchmark.py")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
