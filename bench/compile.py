"""compile=true against eager: step time, compile time and the difference of results, per problem and rule.

`compile=true` compiles the whole update (`sip_train.compiled.CompiledUpdate`: the rule's `loss`, backward and
the optimizer step under one torch.compile) for rules that update by `loss`, backward and a step (adam, sip,
...); the network and the physics alone (`compile_components`) are what it compiled before, and what rules
with their own training step still get; with SIP's Gauss-Newton inverse (which differentiates the physics
twice, unsupported compiled) only the network. For each (problem, rule) bare loops (bench/_loops.py's
`PackageLoop`, the rule's training step without Lightning) start from the same weights and see the same
batches: eager, network + physics compiled (where that runs), and what compile=true compiles for the rule.

1. results: loss, prediction and gradients of the first update on the same batch, compile=true against eager
   and both against the same step in float64 (network and physics). Compiling is within round-off when its
   error against float64 is at most twice the eager float32 error (or 8 float32 ulps), for each of the three.
   Also the loss after `--compare-steps` updates of each (Adam amplifies round-off differences of near-zero
   gradients, so later steps drift apart slowly; the first step is the test);
2. compile time: the first compile=true step minus the first eager step;
3. speed: after those steps, `--blocks` interleaved samples of `--block` steps each.

`--batch` and `--resolution` size the grid problems (poisson, heat); the others run at their config's (paper)
sizes.

    python bench/compile.py --problems sine exp wavepacket oscillators poisson heat --resolution 32 --batch 16 \
        --blocks 20 --block 20 --threads 1 --write BENCHMARKS.md
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
from _report import markdown_table, provenance, publish  # noqa: E402
from sip_train.compiled import (CompiledUpdate, compile_components,  # noqa: E402
                                update_compile_options)

QUANTITIES = ("loss", "prediction", "gradients")
VARIANTS = ("eager", "network + physics", "compile=true")
COMPILED = "compile=true"
#: What the network + physics column says where that variant is not run, by what compile=true compiles.
NOT_RUN = {"network only": "fails (double backward)", "network + physics": "= compile=true"}
ROUND_OFF_FACTOR = 2.0  # compiled error vs float64 may be this multiple of the eager float32 error ...
ULPS = 8 * torch.finfo(torch.float32).eps  # ... or of a few float32 ulps, when eager happens to be closer


class WholeLoop(_loops.PackageLoop):
    """The bare loop with each update made by the module's compiled whole update (`CompiledUpdate`)."""

    def __init__(self, cfg, device: torch.device) -> None:
        super().__init__(cfg, device)
        compile_components(self.problem, self.network)
        self.update = CompiledUpdate(self, self.rule, self.optimizer(), update_compile_options({}, device))

    def step(self) -> torch.Tensor:
        _, y_target, *observed = self.data.train_batch(self.step_index, self.device)
        self.step_index += 1
        return self.update(y_target, *observed)["loss"]


def compiled_loops(problem: str, rule: str, resolution: int | None, batch: int | None, args: argparse.Namespace,
                   device: torch.device) -> tuple[dict[str, _loops.PackageLoop], str]:
    """The eager loop, the network and physics compiled (unless the rule differentiates the physics twice, which
    fails compiled) and what compile=true compiles for the rule (as `InverseProblemModule` decides); and what
    compile=true compiled."""
    with tempfile.TemporaryDirectory() as scratch:
        cfg = _loops.run_config(problem, rule, resolution, batch, 1, Path(scratch), args)
    eager = _loops.PackageLoop(cfg, device)
    if eager.rule.differentiates_physics_twice:
        network_only = _loops.PackageLoop(cfg, device)
        compile_components(network_only.problem, network_only.network, physics=False)
        return {"eager": eager, COMPILED: network_only}, "network only"
    parts = _loops.PackageLoop(cfg, device)
    compile_components(parts.problem, parts.network)
    if not eager.rule.updates_by_loss:
        return {"eager": eager, COMPILED: parts}, "network + physics"
    return {"eager": eager, "network + physics": parts, COMPILED: WholeLoop(cfg, device)}, "whole update"


def first_step(loop: _loops.PackageLoop, y_target: torch.Tensor, *observed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Loss, prediction and parameter gradients of the first update, on y_target (and the observed inputs)."""
    result = (loop.update(y_target, *observed) if isinstance(loop, WholeLoop)
              else loop.rule.training_step(loop, y_target, *observed))
    loss, x = result["loss"], result["x"]
    gradients = torch.cat([p.grad.flatten() for p in loop.network.parameters()])
    return {"loss": loss.detach(), "prediction": x.detach(), "gradients": gradients}


def float64_first_step(loop: _loops.PackageLoop, y_target: torch.Tensor, *observed: torch.Tensor
                       ) -> dict[str, torch.Tensor]:
    """`first_step` with a float64 copy of the (not yet updated) network and float64 physics."""
    network = copy.deepcopy(loop.network).double()
    y_target, observed = y_target.double(), tuple(t.double() for t in observed)
    x = loop.problem.prepare_prediction(network(y_target), y_target)
    per_example, _ = loop.rule.objective(loop.problem, x, y_target, *observed)
    loss = loop.problem.reduce(per_example)
    loss.backward()
    gradients = torch.cat([p.grad.flatten() for p in network.parameters()])
    return {"loss": loss.detach(), "prediction": x.detach(), "gradients": gradients}


def relative_difference(compiled: torch.Tensor, eager: torch.Tensor) -> float:
    """|compiled - eager| / |eager| in the 2-norm."""
    return float(torch.linalg.vector_norm(compiled - eager) / torch.linalg.vector_norm(eager).clamp_min(1e-30))


def compare(problem: str, rule: str, resolution: int | None, batch: int | None, args: argparse.Namespace) -> dict:
    """Eager, network + physics compiled and compile=true bare loops of one (problem, rule): differences of
    compile=true, its compile time, step-time samples of each."""
    torch._dynamo.reset()  # each (problem, rule) compiles afresh; no cache entries of earlier problems count
    device = _loops.device_of(args.device)
    sync = _loops.synchronizer(device)
    loops, scope = compiled_loops(problem, rule, resolution, batch, args, device)
    eager = loops["eager"]
    _, y_target, *observed = eager.data.train_batch(0, device)
    first: dict[str, dict[str, torch.Tensor]] = {"float64": float64_first_step(eager, y_target, *observed)}
    seconds: dict[str, float] = {}
    for name, loop in loops.items():
        sync()
        start = time.perf_counter()
        first[name] = first_step(loop, y_target, *observed)
        sync()
        seconds[name] = time.perf_counter() - start
        loop.step_index = 1  # the first update was on batch 0
    losses: dict[str, torch.Tensor] = {}
    for name, loop in loops.items():
        for _ in range(args.compare_steps):
            losses[name] = loop.step()
    samples: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for round_index in range(args.blocks):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(_loops.time_block(loops[name].step, args.block, sync))
    whole = COMPILED
    return {
        "size": overhead.size_label(resolution, eager.data.batch_size),
        "scope": scope,
        "samples": samples,
        "compile_s": seconds[whole] - seconds["eager"],
        "differences": {key: relative_difference(first[whole][key], first["eager"][key]) for key in QUANTITIES},
        "errors": {name: {key: relative_difference(first[name][key].double(), first["float64"][key])
                          for key in QUANTITIES} for name in ("eager", whole)},
        "drift": relative_difference(losses[whole], losses["eager"]),
    }


def table(results: dict, compare_steps: int) -> str:
    """One row per (problem, rule, size)."""
    rows = []
    for (problem, rule, size), result in results.items():
        samples = result["samples"]
        medians = {name: _loops.spread(samples[name])[0] for name in VARIANTS if name in samples}
        errors = result["errors"]
        within = all(errors[COMPILED][k] <= ROUND_OFF_FACTOR * max(errors["eager"][k], ULPS) for k in QUANTITIES)
        rows.append([problem, rule, size, result["scope"],
                     *(_loops.fmt(samples[name]) if name in samples else NOT_RUN[result["scope"]]
                       for name in VARIANTS),
                     *(f"{medians['eager'] / medians[name]:.2f}x" if name in medians else "-" for name in VARIANTS[1:]),
                     f"{result['compile_s']:.1f}", ", ".join(f"{result['differences'][k]:.1e}" for k in QUANTITIES),
                     ", ".join(f"{errors['eager'][k]:.1e}" for k in QUANTITIES),
                     ", ".join(f"{errors[COMPILED][k]:.1e}" for k in QUANTITIES),
                     "✓" if within else "✗", f"{result['drift']:.1e}"])
    return markdown_table(
        ["problem", "rule", "size", "compile=true compiles", "eager step ms [IQR]",
         "network + physics compiled ms [IQR]", "compile=true ms [IQR]", "speed-up network + physics",
         "speed-up compile=true", "compile time (s)", "step 1: compile=true vs eager (loss, prediction, gradients)",
         "eager vs float64", "compile=true vs float64", f"within round-off (≤ {ROUND_OFF_FACTOR:g}x eager's error or 8 ulps)",
         f"loss diff after {compare_steps + 1} updates"], rows)


def section(results: dict, args: argparse.Namespace, skipped: list[str]) -> str:
    """The `compile` section of BENCHMARKS.md."""
    device = "GPU" if args.device == "cuda" else "CPU"
    return "\n".join([
        "## compile=true: the whole update compiled",
        "",
        f"{device}; bare training loops (no Lightning) from the same weights and data: eager, the network and the "
        "physics compiled (`compile_components`, what compile=true did before and still does for rules with their "
        "own training step), and what compile=true compiles now: the whole update (`CompiledUpdate`: network, "
        "physics, objective and backward, then the optimizer step; torch breaks the graph around `Optimizer.step` "
        "on purpose, so that is a second graph), or the network only where SIP's Gauss-Newton inverse "
        "differentiates the physics twice (compiled physics fail there: AOTAutograd has no double backward). "
        f"Inductor, mode {update_compile_options({}, _loops.device_of(args.device)).get('mode', 'default')}. "
        f"Step times: {args.blocks} rotating interleaved samples of {args.block} update(s) after "
        f"{args.compare_steps + 1} updates of each (which include compilation); speed-up = eager / compiled median. "
        "Differences are |a - b| / |b| (2-norm) on the same first batch for the loss, the prediction and the "
        "parameter gradients, compile=true vs eager and each vs the same step in float64 (network and "
        f"physics); the last column compares the losses after {args.compare_steps + 1} updates of each. Compile "
        "time is the first compile=true step minus the first eager step; it depends on Inductor's on-disk cache "
        "(a few seconds when an earlier run left it warm, tens of seconds per graph when cold)."
        + (f" Not measured: {', '.join(skipped)}." if skipped else ""),
        "",
        table(results, args.compare_steps) if results else "not run",
        "",
        *provenance("bench/compile.py"),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    overhead.add_arguments(parser, blocks=20, block=1, device="cpu")
    parser.set_defaults(problems=["sine", "exp", "wavepacket", "oscillators", "poisson", "heat"])
    parser.add_argument("--rules", nargs="+", default=list(overhead.RULES))
    parser.add_argument("--compare-steps", type=int, default=5, help="steps of each before timing")
    parser.add_argument("--skip", nargs="*", default=["oscillators/sip"],
                        help="problem/rule pairs not measured (default: oscillators/sip, whose generic Gauss-Newton "
                             "inverse takes seconds per step on a CPU)")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    torch.set_num_threads(args.threads)
    _loops.quiet()
    problems, missing = _loops.available_problems(args.problems)
    results = {}
    for problem in problems:
        resolution, batch = overhead.sizes(problem, args)
        batch = batch if _loops.is_grid_problem(problem) else None  # --batch sizes the grid problems only
        for rule in args.rules:
            if f"{problem}/{rule}" in args.skip:
                missing.append(f"{problem}/{rule} (--skip)")
                continue
            result = compare(problem, rule, resolution, batch, args)
            results[problem, rule, result["size"]] = result
            print(table({k: v for k, v in results.items() if k[:2] == (problem, rule)}, args.compare_steps), flush=True)
    text = section(results, args, missing)
    publish(text, args.write, "compile")


if __name__ == "__main__":
    main()
