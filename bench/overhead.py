"""Framework overhead: a Lightning training step against the same computation in a bare PyTorch loop,
and a SIP step against an Adam step and against the network's own forward + backward pass.

Per problem (poisson, heat, fluid), all in one process, compared variants interleaved so that changes
of machine load hit all of them alike:

1. Lightning vs bare loop, per rule (adam, sip). The real `train(cfg)` runs (CSV logger, checkpoints,
   divergence guard, per-step logging, as configured) with its StepTimer replaced by a subclass that,
   every `block` steps, runs `block` steps of a bare loop doing the same computation (`PackageLoop`: the
   network from `build_components`, same initial weights, the batches of `SyntheticData.train_batch(step)`,
   `rule.training_step` through `PlainStep`: plain backward, the rule's bare optimizer). A sample is
   the start-to-start time of `block` Lightning steps or the time of `block` bare steps, each closed
   by a device synchronisation on a GPU (so a sample counts every queued kernel).
2. Bare-loop variants, rotated within each round: Adam step, SIP step, the network's forward +
   backward pass alone (on a fixed batch, trivial loss) and the parts of a step (data generation, SIP
   physics, Adam's physics forward + backward).

The synchronisation audit is bench/sync_audit.py.
The loops and the interleaving timer are in bench/_loops.py.

    python bench/overhead.py --batch 16 --fluid-batch 8 --blocks 30 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loops import (PackageLoop, available_problems, check, device_of, fmt, is_grid_problem,  # noqa: E402
                    lightning_vs_loops, quiet, run_config, spread, synchronizer, time_block)
from _report import markdown_table, provenance, publish  # noqa: E402

PROBLEMS = ("poisson", "heat", "fluid")
RULES = ("adam", "sip")
PAPER_BATCH = {"poisson": 128, "heat": 128, "fluid": 64}
#: Targets at the paper's sizes on a GPU (None: no target for that problem).
TARGETS = {"lightning / bare": 1.05, "SIP / network": {"poisson": 1.2, "heat": 1.2, "fluid": None},
           "SIP / Adam": {"poisson": 1.0, "heat": 1.1, "fluid": 1.1}}


def lightning_vs_bare(problem: str, rule: str, resolution: int | None, batch: int | None,
                      args: argparse.Namespace, *extra: str) -> dict:
    """Interleaved Lightning and bare-loop step times (ms) of one (problem, rule), paired ratios and the summary."""
    result = lightning_vs_loops(problem, rule, resolution, batch, args, {"bare": PackageLoop}, *extra)
    return {**result, "ratios": result["ratios"]["bare"]}


# --- 2. bare-loop variants --------------------------------------------------------------------


def network_pass(loop: PackageLoop, y_target: torch.Tensor) -> None:
    """The network's own forward and backward pass (loss 1/2 |NN(y*)|^2), no physics, no update."""
    loop.optimizer().zero_grad()
    (0.5 * loop.network(loop.problem.network_input(y_target)).pow(2).sum()).backward()


def sip_physics(loop: PackageLoop, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor) -> torch.Tensor:
    """What SIP adds to a step: y = P(x) and the inverse update, without gradients."""
    with torch.no_grad():
        return loop.problem.inverse_update(x, loop.problem.simulate(x, *observed), y_target, *observed)


def adam_physics(loop: PackageLoop, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor) -> None:
    """What a gradient rule adds to a step: L(P(x)) and its gradient with respect to x."""
    x = x.detach().requires_grad_()
    loop.problem.reduce(loop.problem.physics_loss(x, y_target, *observed)).backward()


def bare_variants(problem: str, resolution: int | None, batch: int | None,
                  args: argparse.Namespace) -> dict[str, list[float]]:
    """Per-step times (ms) of the Adam step, the SIP step, the network's forward + backward pass and
    the parts of a step, interleaved in rotating order, `args.blocks` samples each."""
    device = device_of(args.device)
    sync = synchronizer(device)
    with tempfile.TemporaryDirectory() as scratch:
        loops = {rule: PackageLoop(run_config(problem, rule, resolution, batch, 1, Path(scratch), args), device)
                 for rule in RULES}
    parts = loops["sip"]
    _, y_target, *observed = parts.data.train_batch(0, device)
    with torch.no_grad():
        x = parts.predict(y_target)
    data_steps = itertools.count()
    variants: dict[str, Callable[[], object]] = {
        "Adam step": loops["adam"].step,
        "SIP step": loops["sip"].step,
        "network forward+backward": lambda: network_pass(parts, y_target),
        "data generation": lambda: parts.data.train_batch(next(data_steps), device),
        "SIP physics": lambda: sip_physics(parts, x, y_target, *observed),
        "Adam physics forward+backward": lambda: adam_physics(parts, x, y_target, *observed),
    }
    names = list(variants)
    for name in names:
        time_block(variants[name], args.warmup, sync)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.blocks):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_block(variants[name], args.block, sync))
    return samples


# --- tables ----------------------------------------------------------------------------------


def round_ratios(samples: dict[str, list[float]], numerator: str, denominator: str) -> list[float]:
    """Per-round ratios of two variants timed in the same rounds."""
    return [a / b for a, b in zip(samples[numerator], samples[denominator])]


def overhead_table(results: dict) -> str:
    """Lightning vs bare loop per (problem, rule, size)."""
    rows = []
    for (problem, rule, size), result in results.items():
        lightning, bare = spread(result["lightning"])[0], spread(result["bare"])[0]
        rows.append([problem, rule, size, fmt(result["lightning"]), fmt(result["bare"]),
                     check(result["ratios"], TARGETS["lightning / bare"]), f"{lightning - bare:+.3g}",
                     len(result["lightning"])])
    return markdown_table(["problem", "rule", "grid, batch", "Lightning step ms, median [IQR]",
                           "bare-loop step ms [IQR]", "Lightning / bare, paired [IQR]", "difference of medians (ms)",
                           "samples"], rows)


def variants_table(results: dict) -> str:
    """SIP vs Adam vs the network alone, and the parts of a step, per problem."""
    rows = []
    for (problem, size), samples in results.items():
        median = {name: spread(values)[0] for name, values in samples.items()}
        rows.append([problem, size, fmt(samples["Adam step"]), fmt(samples["SIP step"]),
                     fmt(samples["network forward+backward"]), f"{median['data generation']:.3g}",
                     f"{median['SIP physics']:.3g}", f"{median['Adam physics forward+backward']:.3g}",
                     check(round_ratios(samples, "SIP step", "network forward+backward"),
                           TARGETS["SIP / network"][problem]),
                     check(round_ratios(samples, "SIP step", "Adam step"), TARGETS["SIP / Adam"][problem])])
    return markdown_table(["problem", "grid, batch", "Adam step ms [IQR]", "SIP step ms [IQR]",
                           "network fwd+bwd ms [IQR]", "data gen. ms", "SIP physics ms", "Adam physics fwd+bwd ms",
                           "SIP / network, per round [IQR]", "SIP / Adam, per round [IQR]"], rows)


def sizes(problem: str, args: argparse.Namespace) -> tuple[int | None, int | None]:
    """(resolution, batch) of a problem: the paper's unless shrunk on the command line (None: the config's)."""
    batch = args.fluid_batch if problem == "fluid" else args.batch
    return args.resolution if is_grid_problem(problem) else None, batch or PAPER_BATCH.get(problem)


def size_label(resolution: int | None, batch: int | None) -> str:
    """'64², 128' for a grid problem, 'batch 100' otherwise."""
    return f"{resolution}², {batch}" if resolution is not None else f"batch {batch}"


def add_arguments(parser: argparse.ArgumentParser, blocks: int, block: int, device: str) -> None:
    """The options shared by overhead.py and gpu_benchmark.py."""
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), help="problems to measure")
    parser.add_argument("--resolution", type=int, default=64, help="cells per axis (paper: 64)")
    parser.add_argument("--batch", type=int, help="batch of poisson and heat (default: the paper's 128)")
    parser.add_argument("--fluid-batch", type=int, help="batch of fluid (default: the paper's 64)")
    parser.add_argument("--blocks", type=int, default=blocks, help="timed samples per variant")
    parser.add_argument("--block", type=int, default=block, help="steps per timed sample")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each variant first")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=device)
    parser.add_argument("--progress-bar", action="store_true", help="keep Lightning's progress bar on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", type=Path, help="Markdown file whose section receives the results")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, blocks=20, block=1, device="cpu")
    parser.add_argument("--host-blocks", type=int, default=40,
                        help="samples of the Lightning-vs-bare comparison on a small grid (0: skip)")
    parser.add_argument("--small-resolution", type=int, default=16, help="the small grid of that comparison")
    parser.add_argument("--small-batch", type=int, default=4, help="its batch")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    quiet()
    problems, missing = available_problems(args.problems)

    overhead, host, variants = {}, {}, {}
    for problem in problems:
        resolution, batch = sizes(problem, args)
        for rule in RULES:
            overhead[problem, rule, size_label(resolution, batch)] = lightning_vs_bare(problem, rule, resolution, batch,
                                                                                 args)
            print(overhead_table({k: v for k, v in overhead.items() if k[:2] == (problem, rule)}), flush=True)
        variants[problem, size_label(resolution, batch)] = bare_variants(problem, resolution, batch, args)
        print(variants_table({k: v for k, v in variants.items() if k[0] == problem}), flush=True)
    if args.host_blocks > 0:
        small = argparse.Namespace(**{**vars(args), "blocks": args.host_blocks})
        for problem in problems:
            for rule in RULES:
                size = f"{args.small_resolution}², {args.small_batch}"
                host[problem, rule, size] = lightning_vs_bare(problem, rule, args.small_resolution, args.small_batch,
                                                              small)
        print(overhead_table(host), flush=True)

    publish(section(args, problems, missing, overhead, host, variants), args.write, "overhead")


def section(args: argparse.Namespace, problems: list[str], missing: list[str], overhead: dict, host: dict,
            variants: dict) -> str:
    """The `overhead` section of BENCHMARKS.md."""
    device = "GPU" if args.device == "cuda" else "CPU"
    bar = "on" if args.progress_bar else "off"
    lines = [
        "## Framework overhead: Lightning vs a bare PyTorch loop, SIP vs Adam vs the network",
        "",
        f"{device}, problems {', '.join(problems)}"
        + (f" (not measured, no config: {', '.join(missing)})" if missing else "")
        + f". Each sample is {args.block} step(s); {args.blocks} samples per variant after {args.warmup} warm-up "
        "steps; variants interleaved (Lightning and bare loop alternate block by block inside one run; the "
        "bare-loop variants rotate within each round). Lightning runs the real `train(cfg)` (CSV logger, "
        f"checkpoint callback, divergence guard, logging every 10 steps, progress bar {bar}); validation "
        "blocks are dropped. The bare loop is the same network, data, objective and optimizer without "
        "Lightning. 'network fwd+bwd' is the network alone on a fixed batch; the SIP and Adam steps include "
        "generating their batch. Ratios are medians of paired samples (each Lightning block over the bare block "
        "just before it; SIP over Adam within a round). ✓/✗ compare with targets stated for the paper's sizes "
        "on a GPU"
        + ("; on this CPU the network's convolutions dominate every step at the sizes above, so the small-grid "
           "table is the one that exposes the framework's own cost." if args.device == "cpu" else "."),
        "",
        "### Lightning step vs bare loop",
        "",
        overhead_table(overhead) if overhead else "not run",
        "",
    ]
    if host:
        lines += [
            "### Fixed per-step cost of the framework (small grid, where the network costs little)",
            "",
            "The difference column is host time Lightning adds to every step; on a GPU it is hidden only "
            "while the host runs ahead of the device, i.e. while no step synchronises (see the audit).",
            "",
            overhead_table(host),
            "",
        ]
    lines += ["### SIP step vs Adam step vs the network's own forward + backward", "",
              variants_table(variants) if variants else "not run", ""]
    lines += provenance("bench/overhead.py")
    return "\n".join(lines)



if __name__ == "__main__":
    main()
