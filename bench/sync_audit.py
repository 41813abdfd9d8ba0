"""Host-device synchronisations in training steps, every rule (SIP with each inverse solver) x every problem,
with the progress bar off and on (terminal mode): which calls would make the host wait for a GPU, per phase
of a step, and the line that makes them (`sip_train/sync_audit.py`).

Each (rule, problem, mode) trains 8 steps on a small grid (2 log steps, 2 divergence checks, one validation
with checkpoint, no validation figures: they cost most of the time) with each problem's own updates_per_step;
calls are counted from the second update on; Hessian-free's CG is capped at 10 iterations. `--jobs` audits
configurations in parallel processes. A 'training step' row is a synchronisation outside log writes,
validation and the divergence check: what must not happen.

    python bench/sync_audit.py --threads 1 --jobs 2 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loops import all_problems, is_grid_problem, quiet, run_config  # noqa: E402
from _report import REPO, markdown_table, provenance, publish  # noqa: E402
from sip_train.sync_audit import ALLOWED, TRAINING, audit_run  # noqa: E402

STEPS = 8  # log_every_n_steps and divergence_check_every 3, validation at step 7
EVERY = 3
#: per-rule settings that keep a run short (and finite: plain SGD at its default rate diverges on some problems
#: within the 8 steps) without changing what a step does
SMALL = {"hessian_free": ["optimizer.optimizer.cg_max_iter=10", "optimizer.optimizer.cg_min_iter=2"],
         "sgd": ["optimizer.lr=1e-6"]}


def all_rules() -> list[str]:
    """Every optimizer option, SIP once per inverse solver ('sip/<inverse>')."""
    rules = sorted(path.stem for path in (REPO / "conf" / "optimizer").glob("*.yaml"))
    inverses = sorted(path.stem for path in (REPO / "conf" / "inverse").glob("*.yaml"))
    return [name for rule in rules for name in ([f"sip/{i}" for i in inverses] if rule == "sip" else [rule])]


def audit(problem: str, rule: str, terminal: bool, args: argparse.Namespace) -> dict:
    """The rates of one (problem, rule, mode), or the one line of why it did not run."""
    optimizer, _, inverse = rule.partition("/")
    mode = argparse.Namespace(**{**vars(args), "progress_bar": terminal})
    with tempfile.TemporaryDirectory() as scratch:
        cfg = run_config(problem, optimizer, args.resolution if is_grid_problem(problem) else None, args.batch, STEPS,
                         Path(scratch), mode, f"trainer.val_check_interval={STEPS - 1}",
                         f"trainer.log_every_n_steps={EVERY}", f"divergence_check_every={EVERY}",
                         *([f"inverse={inverse}"] if inverse else []), *SMALL.get(optimizer, []))
        try:
            with open(os.devnull, "w") as console, contextlib.redirect_stdout(console):  # the bar, the closing line
                summary, tracker = audit_run(cfg, terminal=terminal)
        except Exception as error:  # a refused combination, or a crash: reported, the audit goes on
            return {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    if summary["status"] != "completed":
        return {"error": f"status {summary['status']}"}
    return {"rates": tracker.rates()}


def _start_worker(threads: int) -> None:
    """A process that audits configurations: its torch threads, no start-up chatter."""
    torch.set_num_threads(threads)
    quiet()


def table(results: dict) -> str:
    """Every synchronising call outside log writes, validation and the divergence check, per configuration."""
    rows = []
    for (problem, rule, mode), result in results.items():
        if "error" in result:
            rows.append([problem, rule, mode, "did not run", result["error"][:160], "", ""])
            continue
        for phase, calls in sorted(result["rates"].items()):
            if phase in ALLOWED:
                continue
            for (operation, site, via), rate in sorted(calls.items()):
                rows.append([problem, rule, mode, phase, operation, f"`{site}`",
                             f"{rate:.3g}" + ("" if phase == TRAINING else " per Lightning step")])
    if not rows:
        return "No synchronisation outside log writes, validation and the divergence check."
    return markdown_table(["problem", "rule", "progress", "phase", "operation", "call site", "calls per update"],
                          rows)


def clean(results: dict) -> list[str]:
    """The configurations without any synchronisation where none may be."""
    return [f"{problem} {rule} ({mode})" for (problem, rule, mode), result in results.items()
            if "rates" in result and not set(result["rates"]) - ALLOWED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", nargs="+", default=all_problems())
    parser.add_argument("--rules", nargs="+", default=all_rules(), help="optimizer options; sip/<inverse> for SIP")
    parser.add_argument("--modes", nargs="+", choices=("off", "terminal"), default=["off", "terminal"])
    parser.add_argument("--resolution", type=int, default=16, help="grid of the grid problems")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="configurations audited at once, each in its process")
    parser.add_argument("--write", type=Path, help="Markdown file whose section receives the results")
    args = parser.parse_args()
    args.device = "cpu"
    os.environ.setdefault("WANDB_MODE", "disabled")
    configurations = [(problem, rule, mode) for problem in args.problems for rule in args.rules for mode in args.modes]
    with ProcessPoolExecutor(args.jobs, initializer=_start_worker, initargs=(args.threads,)) as pool:
        futures = {key: pool.submit(audit, key[0], key[1], key[2] == "terminal", args) for key in configurations}
        results = {}
        for key, future in futures.items():
            results[key] = future.result()
            print(table({key: results[key]}), flush=True)
    torch.set_num_threads(args.threads)  # what the provenance reports
    text = "\n".join([
        "## Host-device synchronisations per training step, every rule and problem",
        "",
        f"CPU stand-in for `torch.cuda.set_sync_debug_mode` (host reads of tensor values, value-dependent shapes, "
        f"`torch.tensor(<host data>, device=...)`; not `.to(device)` of host tensors; reads of what stays on the "
        f"host on a GPU too are left out: torch.optim's step counters, the data loader's seeds, convergence flags "
        f"read from pinned memory). Grid {args.resolution}², batch {args.batch}, {STEPS} steps with each problem's "
        "own updates_per_step, progress bar off and in terminal mode. Listed: every call outside the log write "
        "of a log step, validation with its checkpoint (no figures drawn), and the divergence guard's read every "
        f"{EVERY} steps, per update ('training step') or per Lightning step (a callback's `on_train_batch_end`). "
        "Configurations that did not train say why.",
        "",
        table(results),
        "",
        f"Without any such call: {len(clean(results))} of the {len(results)} configurations audited (every one not "
        "listed above).",
        "",
        *provenance("bench/sync_audit.py"),
    ])
    publish(text, args.write, "sync_audit")


if __name__ == "__main__":
    main()
