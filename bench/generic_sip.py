"""Generic SIP inverses against Adam and the hand-written SIP update, per problem.

For each problem every method trains the same initial network on the same batches (one seed) in a
bare loop (no Lightning, so the timings are the update rule's): Adam, SIP with the problem's own
inverse where it has one, and SIP with each generic inverse (gauss_newton, lbfgs, gradient_descent).
Reported: the validation error (the problem's primary metric, x_l1 or the sine's nearest-solution
x_l1) at fixed step counts, and the median step time relative to Adam's. The methods of one problem
run interleaved, `--chunk` steps at a time, so load from other processes hits all of them alike.
Then Gauss-Newton's x error on Poisson against its CG budget (plain GN: damping 0, one outer step).

    python bench/generic_sip.py --steps 60 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, write_section  # noqa: E402
from sip_train.config import compose_config  # noqa: E402
from sip_train.module import build_components  # noqa: E402
from sip_train.rules.base import PlainStep  # noqa: E402

#: problem label -> (config overrides, batch size, steps multiplier)
PROBLEMS = {
    "poisson": (["problem=poisson", "problem.resolution=32"], 16, 1.0),
    "heat": (["problem=heat", "problem.resolution=32"], 16, 1.0),
    "fluid": (["problem=fluid", "problem.resolution=16", "network.levels=3"], 4, 0.1),
    "sine xi=1": (["problem=sine", "problem.xi=1"], 100, 1.0),
    "sine xi=10": (["problem=sine", "problem.xi=10"], 100, 1.0),
    "sine xi=100": (["problem=sine", "problem.xi=100"], 100, 1.0),
    "exp": (["problem=exp"], 100, 1.0),
    "wavepacket": (["problem=wavepacket", "problem.lbfgsb_max_iter=50"], 32, 1.0),
}
#: method -> overrides; the generic solvers at their defaults except where a problem needs otherwise
METHODS = {
    "adam": ["optimizer=adam"],
    "sip (own U)": ["optimizer=sip", "inverse=problem"],
    "sip gauss_newton": ["optimizer=sip", "inverse=gauss_newton"],
    "sip lbfgs": ["optimizer=sip", "inverse=lbfgs"],
    "sip gradient_descent": ["optimizer=sip", "inverse=gradient_descent"],
}
#: settings a generic solver needs on a problem (as in tests/test_inverse_training.py)
SETTINGS = {
    ("poisson", "sip gradient_descent"): ["inverse.lr=1e-3"],
    **{(f"sine xi={xi}", "sip gradient_descent"): [f"inverse.lr={1e-3 / xi**2:g}"] for xi in (1, 10, 100)},
    ("fluid", "sip gauss_newton"): ["inverse.damping=10"],
    ("heat", "adam"): ["optimizer.lr=1e-3"],
}


class Loop(PlainStep):
    """One method's training state and the narrow step interface its rule uses."""

    def __init__(self, overrides: list[str], seed: int) -> None:
        cfg = compose_config(overrides)
        problem, network, self.rule = build_components(cfg.problem, cfg.optimizer, cfg.network, seed)
        super().__init__(problem, network, self.rule)
        self.times: list[float] = []

    def step(self, batch: tuple[torch.Tensor, ...]) -> None:
        start = time.perf_counter()
        self.rule.training_step(self, *batch[1:])
        self.times.append(time.perf_counter() - start)

    def error(self, x_true: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor) -> float:
        """Mean validation primary metric."""
        with torch.no_grad():
            x = self.predict(y_target)
            metrics = self.problem.metrics(x, x_true, self.problem.simulate(x, *observed), y_target, *observed)
        return metrics[self.problem.primary_metric].mean().item()


def train_interleaved(loops: dict[str, Loop], steps: int, checkpoints: list[int], batch: int, chunk: int,
                      seed: int) -> dict[str, dict[int, float]]:
    """Train all loops on the same batches, `chunk` steps each in turn; errors at the checkpoints."""
    problem = next(iter(loops.values())).problem
    validation = problem.sample(64, torch.Generator().manual_seed(seed + 7))
    errors = {name: {0: loop.error(*validation)} for name, loop in loops.items()}
    for first in range(0, steps, chunk):
        for name, loop in loops.items():
            for step in range(first, min(first + chunk, steps)):
                loop.step(problem.sample(batch, torch.Generator().manual_seed(seed + 1000 + step)))
                if step + 1 in checkpoints:
                    errors[name][step + 1] = loop.error(*validation)
    return errors


def method_table(args: argparse.Namespace) -> str:
    rows = []
    for label, (problem_overrides, batch, share) in PROBLEMS.items():
        steps = max(2, int(args.steps * share))
        checkpoints = sorted({max(1, steps // 4), steps // 2, steps})
        loops = {}
        for method, overrides in METHODS.items():
            try:
                loops[method] = Loop([*problem_overrides, *overrides, f"data.batch_size={batch}",
                                      *SETTINGS.get((label, method), [])], args.seed)
            except ValueError as error:  # e.g. inverse=problem for a problem without one
                print(f"{label} / {method}: {error}", flush=True)
        started = time.perf_counter()
        errors = train_interleaved(loops, steps, checkpoints, batch, args.chunk, args.seed)
        adam_ms = statistics.median(loops["adam"].times) * 1e3
        for method, loop in loops.items():
            step_ms = statistics.median(loop.times) * 1e3
            curve = ", ".join(f"{errors[method][c]:.4g}" for c in [0, *checkpoints])
            rows.append([label, method, "0, " + ", ".join(map(str, checkpoints)), curve, f"{step_ms:.3g}",
                         f"{step_ms / adam_ms:.3g}"])
        print(f"{label}: {time.perf_counter() - started:.0f} s", flush=True)
    return markdown_table(["problem", "method", "at steps", "val error", "step ms", "step / Adam's"], rows)


def budget_table(args: argparse.Namespace) -> str:
    """Plain Gauss-Newton on Poisson with a CG budget of 5 .. 500 iterations, against Adam and the own U."""
    problem_overrides, batch, _ = PROBLEMS["poisson"]
    loops = {"adam": Loop([*problem_overrides, "optimizer=adam", f"data.batch_size={batch}"], args.seed),
             "sip (own U)": Loop([*problem_overrides, "optimizer=sip", "inverse=problem", f"data.batch_size={batch}"],
                                 args.seed)}
    for budget in args.budgets:
        loops[f"gauss_newton, CG {budget}"] = Loop(
            [*problem_overrides, "optimizer=sip", "inverse=gauss_newton", f"inverse.iterations={budget}",
             "inverse.damping=0", "inverse.outer_iterations=1", "inverse.rel_tol=1e-6", f"data.batch_size={batch}"],
            args.seed)
    errors = train_interleaved(loops, args.steps, [args.steps], batch, args.chunk, args.seed)
    adam_ms = statistics.median(loops["adam"].times) * 1e3
    rows = [[name, f"{errors[name][args.steps]:.4g}", f"{statistics.median(loop.times) * 1e3:.3g}",
             f"{statistics.median(loop.times) * 1e3 / adam_ms:.3g}"] for name, loop in loops.items()]
    return markdown_table(["poisson 32x32", f"val x_l1 after {args.steps} steps", "step ms", "step / Adam's"], rows)


def long_table(args: argparse.Namespace) -> str:
    """exp and wavepacket, where 60 steps move no method far: `--long-steps` steps for the cheap methods."""
    rows = []
    for label in ("exp", "wavepacket"):
        problem_overrides, batch, _ = PROBLEMS[label]
        methods = ["adam", "sip gauss_newton", "sip gradient_descent"] + (["sip (own U)"] if label == "exp" else [])
        loops = {method: Loop([*problem_overrides, *METHODS[method], f"data.batch_size={batch}"], args.seed)
                 for method in methods}
        checkpoints = [args.long_steps // 4, args.long_steps // 2, args.long_steps]
        errors = train_interleaved(loops, args.long_steps, checkpoints, batch, 50, args.seed)
        for method in methods:
            rows.append([label, method, ", ".join(f"{errors[method][c]:.4g}" for c in [0, *checkpoints])])
        problem = next(iter(loops.values())).problem
        validation = problem.sample(64, torch.Generator().manual_seed(args.seed + 7))
        for name, value in problem.reference_metrics(*validation).items():
            if name.endswith("x_l1"):
                rows.append([label, f"per-example {name.removesuffix('_x_l1')} (no network)", f"{value.mean().item():.4g}"])
    steps = ", ".join(str(c) for c in [0, args.long_steps // 4, args.long_steps // 2, args.long_steps])
    return markdown_table(["problem", "method", f"val x_l1 at steps {steps}"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--chunk", type=int, default=5, help="steps a method runs before the next one's turn")
    parser.add_argument("--long-steps", type=int, default=1000, help="steps of the exp/wavepacket table")
    parser.add_argument("--budgets", type=int, nargs="+", default=[5, 20, 100, 500])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="write the tables into this Markdown file's generic_sip section")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = method_table(args)
    print(methods, flush=True)
    budgets = budget_table(args)
    print(budgets, flush=True)
    long = long_table(args)
    print(long, flush=True)
    if args.write:
        text = "\n".join([
            "## Generic SIP inverses", "", *provenance("bench/generic_sip.py"), "",
            "Same seed, same initial network and same batches for every method of a problem; learning rate 1e-3",
            "(Adam, and the inner Adam of SIP); validation error on 64 fixed examples (x_l1; the sine's is to the",
            "nearest solution). Generic solvers at their defaults (conf/inverse), except: gradient descent's lr",
            "on Poisson 1e-3 and on the sine 1e-3/xi^2 (its default 4e-2 diverges there: not scale-invariant),",
            "and Gauss-Newton's damping 10 on the fluid (its Fourier-weighted L1 loss makes the GN model poor).",
            "", methods, "", "Gauss-Newton's CG budget on Poisson (plain GN: damping 0, one step, rel_tol 1e-6):",
            "", budgets, "", f"Longer runs where {args.steps} steps move no method far (same settings):", "", long,
        ])
        write_section(args.write if args.write.is_absolute() else REPO / args.write, "generic_sip", text)


if __name__ == "__main__":
    main()
