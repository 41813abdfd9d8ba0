"""compile=true against eager: step time, compile time and the difference of results, per problem and rule.

`compile=true` is `sip_train.module.compile_components`: torch.compile of the network (in place) and of the
problem's `simulate` and `inverse_update`. For each (problem, rule) two bare loops (bench/_loops.py's
`BareLoop`, the training step of the module without Lightning) start from the same weights and see the same
batches, one compiled:

1. results: loss, prediction and gradients of the first step on the same batch, compiled against eager and
   both against the same step in float64 (network and physics). Compiling is within round-off when its error
   against float64 is at most twice the eager float32 error (or twice 8 float32 ulps), for each of the three.
   Also the loss after `--compare-steps` steps of each (Adam amplifies round-off differences of near-zero
   gradients, so later steps drift apart slowly; the first step is the test);
2. compile time: the first compiled step minus the first eager step;
3. speed: after those steps, `--blocks` interleaved samples of `--block` steps each.

    python bench/compile.py --problems poisson heat --batch 16 --blocks 20 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _loops  # noqa: E402
import overhead  # noqa: E402
from _report import markdown_table, provenance, write_section  # noqa: E402

QUANTITIES = ("loss", "prediction", "gradients")
ROUND_OFF_FACTOR = 2.0  # compiled error vs float64 may be this multiple of the eager float32 error ...
ULPS = 8 * torch.finfo(torch.float32).eps  # ... or of a few float32 ulps, when eager happens to be closer


def first_step(loop: _loops.BareLoop, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss, prediction and parameter gradients of one step on y_target, without the update."""
    x = loop.predict(y_target)
    per_example, _ = loop.rule.objective(loop.problem, x, y_target)
    loss = loop.problem.reduce(per_example)
    loop.optimizer.zero_grad()
    loss.backward()
    gradients = torch.cat([p.grad.flatten() for p in loop.network.parameters()])
    return {"loss": loss.detach(), "prediction": x.detach(), "gradients": gradients}


def float64_first_step(loop: _loops.BareLoop, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
    """`first_step` with a float64 copy of the (not yet updated) network and float64 physics."""
    network = copy.deepcopy(loop.network).double()
    y_target = y_target.double()
    x = loop.problem.prepare_prediction(network(y_target), y_target)
    per_example, _ = loop.rule.objective(loop.problem, x, y_target)
    loss = loop.problem.reduce(per_example)
    loss.backward()
    gradients = torch.cat([p.grad.flatten() for p in network.parameters()])
    return {"loss": loss.detach(), "prediction": x.detach(), "gradients": gradients}


def relative_difference(compiled: torch.Tensor, eager: torch.Tensor) -> float:
    """|compiled - eager| / |eager| in the 2-norm."""
    return float(torch.linalg.vector_norm(compiled - eager) / torch.linalg.vector_norm(eager).clamp_min(1e-30))


def compare(problem: str, rule: str, resolution: int, batch: int, args: argparse.Namespace) -> dict:
    """Eager vs compiled bare loops of one (problem, rule): differences, compile time, step-time samples."""
    torch._dynamo.reset()  # each pair compiles afresh; no cache entries of earlier problems count
    device = _loops.device_of(args.device)
    sync = _loops.synchronizer(device)
    with tempfile.TemporaryDirectory() as scratch:
        eager, compiled = (_loops.BareLoop(_loops.run_config(problem, rule, resolution, batch, 1, Path(scratch),
                                                                 args, f"compile={flag}"), device)
                           for flag in ("false", "true"))
    _, y_target = eager.data.train_batch(0, device)
    first: dict[str, dict[str, torch.Tensor]] = {"float64": float64_first_step(eager, y_target)}
    seconds: dict[str, float] = {}
    for name, loop in (("eager", eager), ("compiled", compiled)):
        sync()
        start = time.perf_counter()
        first[name] = first_step(loop, y_target)
        sync()
        seconds[name] = time.perf_counter() - start
    losses = {"eager": [], "compiled": []}
    for _ in range(args.compare_steps):
        losses["eager"].append(eager.step())
        losses["compiled"].append(compiled.step())
    samples = {"eager": [], "compiled": []}
    for round_index in range(args.blocks):
        order = (("eager", eager), ("compiled", compiled))
        for name, loop in order if round_index % 2 == 0 else order[::-1]:
            samples[name].append(_loops.time_block(loop.step, args.block, sync))
    return {
        "samples": samples,
        "compile_s": seconds["compiled"] - seconds["eager"],
        "differences": {key: relative_difference(first["compiled"][key], first["eager"][key]) for key in QUANTITIES},
        "errors": {name: {key: relative_difference(first[name][key].double(), first["float64"][key])
                          for key in QUANTITIES} for name in ("eager", "compiled")},
        "drift": relative_difference(losses["compiled"][-1], losses["eager"][-1]),
    }


def table(results: dict, compare_steps: int) -> str:
    """One row per (problem, rule, size)."""
    rows = []
    for (problem, rule, size), result in results.items():
        eager, compiled = (_loops.spread(result["samples"][name])[0] for name in ("eager", "compiled"))
        errors = result["errors"]
        within = all(errors["compiled"][k] <= ROUND_OFF_FACTOR * max(errors["eager"][k], ULPS) for k in QUANTITIES)
        rows.append([problem, rule, size, _loops.fmt(result["samples"]["eager"]),
                     _loops.fmt(result["samples"]["compiled"]), f"{eager / compiled:.2f}x",
                     f"{result['compile_s']:.1f}", ", ".join(f"{result['differences'][k]:.1e}" for k in QUANTITIES),
                     ", ".join(f"{errors['eager'][k]:.1e}" for k in QUANTITIES),
                     ", ".join(f"{errors['compiled'][k]:.1e}" for k in QUANTITIES),
                     "✓" if within else "✗", f"{result['drift']:.1e}"])
    return markdown_table(
        ["problem", "rule", "grid, batch", "eager step ms [IQR]", "compiled step ms [IQR]", "speed-up",
         "compile time (s)", "step 1: compiled vs eager (loss, prediction, gradients)", "eager vs float64",
         "compiled vs float64", f"within round-off (≤ {ROUND_OFF_FACTOR:g}x eager's error or 8 ulps)",
         f"loss diff after {compare_steps} steps"], rows)


def section(results: dict, args: argparse.Namespace, skipped: list[str]) -> str:
    """The `compile` section of BENCHMARKS.md."""
    device = "GPU" if args.device == "cuda" else "CPU"
    return "\n".join([
        "## compile=true: torch.compile of the network and the physics",
        "",
        f"{device}; bare training loop (no Lightning), eager vs `compile_components` from the same weights and "
        f"data. Step times: {args.blocks} interleaved samples of {args.block} step(s) after {args.compare_steps} "
        "steps of each (which include compilation). Speed-up = eager / compiled median. Differences are |a - b| / |b| "
        "(2-norm) on the same first batch for the loss, the prediction and the parameter gradients, compiled vs "
        "eager and each vs the same step in float64 (network and physics); the last column compares the losses "
        f"after {args.compare_steps} steps of each. Compile time is the first compiled step minus the first eager "
        "step; it depends on Inductor's on-disk cache (a few seconds when an earlier run left it warm, tens of "
        "seconds per graph when cold)."
        + (f" Not measured: {', '.join(skipped)}." if skipped else ""),
        "",
        table(results, args.compare_steps) if results else "not run",
        "",
        *provenance("bench/compile.py"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    overhead.add_arguments(parser, blocks=20, block=1, device="cpu")
    parser.set_defaults(problems=["poisson", "heat"])
    parser.add_argument("--rules", nargs="+", default=list(overhead.RULES))
    parser.add_argument("--compare-steps", type=int, default=5, help="steps of each before timing")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    _loops.quiet()
    problems, missing = _loops.available_problems(args.problems)
    results = {}
    for problem in problems:
        resolution, batch = overhead.sizes(problem, args)
        for rule in args.rules:
            size = overhead.size_label(resolution, batch)
            results[problem, rule, size] = compare(problem, rule, resolution, batch, args)
            print(table({k: v for k, v in results.items() if k[:2] == (problem, rule)}, args.compare_steps), flush=True)
    text = section(results, args, missing)
    print(text)
    if args.write is not None:
        write_section(args.write, "compile", text)
        print(f"wrote section to {args.write}")


if __name__ == "__main__":
    main()
