"""Half-inverse gradients against Adam, Gauss-Newton and SIP: the HIG paper's oscillators (test loss per data
point against training time and steps), sine (xi = 1, 10, 100) and exp, and HIG's step time against the network's.

Every method of one problem starts from the same initial network (same seed) on the same data, in a plain
loop (`rule.training_step` through the StepInterface, no Lightning). The methods train in turns of
`--slice` seconds (round robin), so load from other processes falls on all of them alike; evaluation on the
problem's validation set happens between turns and is not counted as training time.

    python bench/hig.py --seconds 120 --slice 20 --small-seconds 20 --threads 1 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loops import PackageLoop, quiet  # noqa: E402
from _report import markdown_table, median_ms, provenance, write_section  # noqa: E402

from sip_train.config import compose_config  # noqa: E402

#: Oscillator methods: the paper's settings (experiment=paper_hig_oscillators) and SIP with the generic inverse.
ADAM, GAUSS_NEWTON, HIG, SIP = ("Adam (batch 512, lr 3e-4)", "Gauss-Newton (batch 128, lr 1)", "HIG (batch 128, lr 1)",
                                "SIP, generic inverse (batch 128, Adam 1e-3)")
OSCILLATOR_METHODS = {
    ADAM: ["experiment=paper_hig_oscillators", "optimizer=adam"],
    GAUSS_NEWTON: ["experiment=paper_hig_oscillators", "optimizer=hig", "optimizer.kappa=1"],
    HIG: ["experiment=paper_hig_oscillators", "optimizer=hig"],
    SIP: ["problem=oscillators", "optimizer=sip"],
}
#: Step counts at which the oscillator runs are also evaluated (the curves against steps).
STEP_MARKS = (10, 30, 100, 300, 1000, 3000, 10000, 30000)
#: Small problems: HIG's lr from a short probe (sine: 1; exp: 0.1, lr 1 diverges), Adam and SIP the paper's 1e-3.
SMALL_PROBLEMS = {**{f"sine xi={xi}": ["problem=sine", f"problem.xi={xi}"] for xi in (1, 10, 100)},
                  "exp": ["problem=exp"]}
SMALL_RULES = {"Adam": ["optimizer=adam"], "SIP": ["optimizer=sip"], "HIG": ["optimizer=hig"]}
HIG_LR = {"sine": 1.0, "exp": 0.1}


class DataLoop(PackageLoop):
    """The minimal loop on sip-train's data stream (the fixed training set where data.train_size is set)."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.data = instantiate(cfg.data, problem=self.problem, seed=cfg.seed)
        self.device, self.steps, self.seconds = device, 0, 0.0

    def step(self) -> dict[str, torch.Tensor]:
        _, y_target, *observed = self.data.train_batch(self.steps, self.device)
        self.steps += 1
        return self.rule.training_step(self, y_target, *observed)

    def train_for(self, seconds: float, stop_at: tuple[int, ...] = ()) -> None:
        """Train for about `seconds` of step time, pausing (untimed) at the step counts in `stop_at`."""
        end = self.seconds + seconds
        while self.seconds < end:
            start = time.perf_counter()
            self.step()
            self.seconds += time.perf_counter() - start
            if self.steps in stop_at:
                return

    def evaluate(self) -> dict[str, float]:
        """Mean validation metrics of the current network."""
        x_true, y_target, *observed = self.data.validation_set(self.device)
        with torch.no_grad():
            x = self.predict(y_target)
            metrics = self.problem.metrics(x, x_true, self.problem.simulate(x, *observed), y_target, *observed)
        return {name: value.mean().item() for name, value in metrics.items()}


def make_loop(overrides: list[str], args: argparse.Namespace) -> DataLoop:
    return DataLoop(compose_config([*overrides, f"seed={args.seed}"]), torch.device("cpu"))


def oscillators(args: argparse.Namespace) -> str:
    """Test loss per data point (the paper's read-out) against training time and steps, four methods."""
    loops = {name: make_loop(overrides, args) for name, overrides in OSCILLATOR_METHODS.items()}
    by_time: dict[str, list[tuple[float, int, float]]] = {name: [(0.0, 0, loop.evaluate()["paper_loss"])]
                                                         for name, loop in loops.items()}
    by_step: dict[str, dict[int, float]] = {name: {} for name in loops}
    for turn in range(math.ceil(args.seconds / args.slice)):
        for name, loop in loops.items():
            end = min(args.seconds, (turn + 1) * args.slice)
            while loop.seconds < end:
                loop.train_for(end - loop.seconds, STEP_MARKS)
                if loop.steps in STEP_MARKS and loop.steps not in by_step[name]:
                    by_step[name][loop.steps] = loop.evaluate()["paper_loss"]
            by_time[name].append((loop.seconds, loop.steps, loop.evaluate()["paper_loss"]))
            print(name, by_time[name][-1], flush=True)
    names = list(loops)
    time_rows = [[f"~{by_time[names[0]][k][0]:.0f}",
                  *(f"{by_time[n][k][2]:.4g} ({by_time[n][k][1]})" for n in names)]
                 for k in range(len(by_time[names[0]]))]
    marks = [m for m in STEP_MARKS if any(m in by_step[n] for n in names)]
    step_rows = [[m, *(f"{by_step[n][m]:.4g}" if m in by_step[n] else "" for n in names)] for m in marks]
    step_ms = [1e3 * loops[n].seconds / max(loops[n].steps, 1) for n in names]
    final = {n: by_time[n][-1][2] for n in names}
    verdict = (f"After {args.seconds:.0f} s: HIG {final[HIG]:.3g}, Adam {final[ADAM]:.3g}, Gauss-Newton "
               f"{final[GAUSS_NEWTON]:.3g}, SIP {final[SIP]:.3g}; HIG / Adam = {final[HIG] / final[ADAM]:.3g} "
               "(below 1: HIG ahead).")
    return "\n".join([
        "### Oscillators: test loss per data point", "",
        "2 oscillators, 96 RK4 steps, 4096 training and 4096 test states, MLP 4-20-20-20-96 ReLU (seed "
        f"{args.seed}). Loss per data point = mean over the test set of the sum of squares of (final state - x0), "
        f"the HIG paper's read-out (= 2 val/y_l2 = val/paper_loss). {args.seconds:.0f} s of training per method "
        f"(the paper: one hour), in turns of {args.slice:.0f} s.", "",
        "Against training time (steps done in brackets):", "",
        markdown_table(["train time (s)", *names], time_rows), "",
        "Against steps:", "",
        markdown_table(["step", *names], step_rows), "",
        markdown_table(["method", "mean step (ms)"], [[n, ms] for n, ms in zip(names, step_ms)]), "",
        verdict,
    ])


def small_problems(args: argparse.Namespace) -> str:
    """HIG vs Adam vs SIP on sine (xi = 1, 10, 100) and exp: the error after equal training time."""
    rows = []
    for problem, problem_overrides in SMALL_PROBLEMS.items():
        hig_lr = [f"optimizer.lr={HIG_LR[problem.split()[0]]}"]
        loops = {rule: make_loop([*problem_overrides, *overrides, *(hig_lr if rule == "HIG" else [])], args)
                 for rule, overrides in SMALL_RULES.items()}
        start = {rule: loop.evaluate() for rule, loop in loops.items()}
        for turn in range(1, 5):
            for loop in loops.values():
                loop.train_for(args.small_seconds * turn / 4 - loop.seconds)
        for rule, loop in loops.items():
            metrics = loop.evaluate()
            accuracy = metrics.get("rel_accuracy", metrics["x_l1"])
            rows.append([problem, rule, loop.steps, start[rule]["y_l2"], metrics["y_l2"], accuracy])
            print(rows[-1], flush=True)
    return "\n".join([
        "### Sine and exp: HIG vs Adam vs SIP", "",
        f"{args.small_seconds:.0f} s of training each (in four interleaved turns), the problems' paper batch sizes "
        "(100) and networks; Adam and SIP (the problem's own inverse, inner Adam) at the paper's lr 1e-3, HIG "
        f"(kappa 0.5, truncation 1e-6) at lr {HIG_LR['sine']} on sine and {HIG_LR['exp']} on exp (a short probe: "
        "lr 1 diverges on exp). Error: sine the relative accuracy |x - x*| / xi (Fig. 5d), exp x_l1; on the "
        "validation set.", "",
        markdown_table(["problem", "rule", "steps", "y_l2 at start", "y_l2", "error"], rows),
    ])


def widths(args: argparse.Namespace) -> str:
    """Median step time of HIG and Adam on the oscillators (batch 128 both) for growing hidden widths."""
    rows = []
    for width in args.widths:
        network = [f"network_defaults.mlp_hidden=[{width},{width},{width}]", "data.batch_size=128"]
        loops = {rule: make_loop(["problem=oscillators", f"optimizer={rule}", *network], args)
                 for rule in ("adam", "hig")}
        parameters = sum(p.numel() for p in loops["hig"].network.parameters())
        adam_ms = median_ms(loops["adam"].step, repeats=20)
        hig_ms = median_ms(loops["hig"].step, repeats=5, warmup=1)
        svd_ms = float(loops["hig"].step()["stats"]["svd_ms"])
        rows.append([f"{width}-{width}-{width}" + (" (paper)" if width == 20 else ""), parameters, adam_ms, hig_ms,
                     svd_ms, hig_ms / adam_ms])
        print(rows[-1], flush=True)
    return "\n".join([
        "### Step time against network size (oscillators, batch 128)", "",
        "Median over 20 Adam steps and 5 HIG steps (HIG's J is (128 x 4) x parameters); svd_ms: one HIG step's SVD.",
        "",
        markdown_table(["hidden widths", "parameters", "Adam step (ms)", "HIG step (ms)", "HIG SVD (ms)",
                        "HIG / Adam"], rows),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="oscillators: training seconds per method")
    parser.add_argument("--slice", type=float, default=20.0, help="oscillators: seconds per turn")
    parser.add_argument("--small-seconds", type=float, default=20.0, help="sine/exp: training seconds per rule")
    parser.add_argument("--widths", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--parts", nargs="+", default=["oscillators", "small", "widths"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write", type=Path, help="Markdown file whose `hig` section receives the results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    parts = {"oscillators": oscillators, "small": small_problems, "widths": widths}
    sections = [parts[name](args) for name in args.parts]
    text = "\n\n".join(["## Half-inverse gradients (HIG), Gauss-Newton, Adam, SIP", *sections,
                        "\n".join(provenance("bench/hig.py"))])
    print(text)
    if args.write is not None:
        write_section(args.write, "hig", text)


if __name__ == "__main__":
    main()
