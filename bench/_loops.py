"""What the benchmarks time a `train(cfg)` run against: sip-train's components driven without Lightning
(`PackageLoop`), and the timer that interleaves any such loops block by block with the real run."""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Protocol

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from _report import REPO
import sip_train.run
from sip_train.callbacks import StepTimer
from sip_train.config import compose_config
from sip_train.compiled import compile_components
from sip_train.module import build_components
from sip_train.rules.base import PlainStep


#: The clock of every timing here: wall time, or (`use_cpu_clock`) this process's CPU time, which on a
#: machine shared with other processes counts only the work of this one (one thread: the same work).
clock: Callable[[], float] = time.perf_counter


def use_cpu_clock() -> None:
    """Time by this process's CPU time instead of wall time (for one thread, on a shared CPU)."""
    global clock
    clock = time.process_time


class Loop(Protocol):
    """Anything that makes one training update per call of `step`."""

    def step(self) -> object: ...


def run_config(problem: str, rule: str, resolution: int | None, batch: int | None, steps: int, run_dir: Path,
               args: argparse.Namespace, *extra: str) -> DictConfig:
    """The real config of one run, shrunk only where it does not touch the training step: CSV
    logging, a validation set of one batch, no figures, no validation before the first step.
    `resolution` / `batch` None keep the problem's own (paper) values."""
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    sizes = [f"problem.resolution={resolution}"] if resolution is not None else []
    if batch is not None:
        sizes += [f"data.batch_size={batch}", f"data.val_size={batch}", f"data.val_batch_size={batch}"]
    overrides = [
        f"problem={problem}", f"optimizer={rule}", *sizes, f"trainer.max_steps={steps}",
        f"trainer.accelerator={accelerator}", f"trainer.enable_progress_bar={str(args.progress_bar).lower()}",
        "logger=csv", "figure_examples=0", "validate_at_start=false", f"threads={args.threads}", f"seed={args.seed}",
        *extra,
    ]
    return compose_config(overrides, run_dir)


def is_grid_problem(problem: str) -> bool:
    """Whether the problem's config has a `resolution` (a 2D grid that --resolution may resize)."""
    return "resolution" in OmegaConf.load(REPO / "conf" / "problem" / f"{problem}.yaml").get("problem", {})


def device_of(name: str) -> torch.device:
    """torch.device("cpu") or the current CUDA device with its index (as Lightning names it)."""
    return torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device("cpu")


def synchronizer(device: torch.device) -> Callable[[], None]:
    """A function that waits for all queued work on `device` (nothing to wait for on the CPU)."""
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


class PackageLoop(PlainStep):
    """sip-train's components and data stream without Lightning: `rule.training_step` driven through `PlainStep`
    (plain backward, the rule's bare optimizer) on `SyntheticData.train_batch(step)`."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        problem, network, self.rule = build_components(cfg.problem, cfg.optimizer, cfg.network, cfg.seed)
        if cfg.get("compile", False):
            compile_components(problem, network)
        super().__init__(problem.to(device), network.to(device).train(), self.rule)
        self.data = instantiate(cfg.data, problem=problem, seed=cfg.seed)
        self.device = device
        self.step_index = 0

    def step(self) -> dict[str, torch.Tensor]:
        """One update on the next training batch of the run's data stream."""
        _, y_target, *observed = self.data.train_batch(self.step_index, self.device)
        self.step_index += 1
        return self.rule.training_step(self, y_target, *observed)


def time_block(function: Callable[[], object], count: int, sync: Callable[[], None]) -> float:
    """Milliseconds per call of `count` back-to-back calls, between two device synchronisations."""
    sync()
    start = clock()
    for _ in range(count):
        function()
    sync()
    return 1e3 * (clock() - start) / count


class InterleavedTimer(StepTimer):
    """The run's StepTimer, which also times `block` steps of each loop after every `block` training steps.

    Training steps are global steps (optimizer updates), so a run making several updates per Lightning
    batch is timed per update too. After `warmup` steps of each, a sample of Lightning is the time from
    the end of the loops' blocks to the first batch start at least `block` global steps later, divided by
    the steps done. Blocks that contain a validation are dropped. The loops run in rotating order; `ratios`
    pairs each Lightning sample with each loop's block just before it, so slow changes of load cancel.
    """

    def __init__(self, make_loops: Callable[[torch.device], dict[str, Loop]], warmup: int, block: int,
                 blocks: int) -> None:
        super().__init__()
        self.make_loops, self.warmup, self.block, self.blocks = make_loops, warmup, block, blocks
        self.lightning_ms: list[float] = []
        self.loop_ms: dict[str, list[float]] = {}
        self.ratios: dict[str, list[float]] = {}
        self._mark: tuple[float, int] | None = None  # (time, global step) where the running sample began
        self._clean = True

    def on_train_start(self, trainer, pl_module) -> None:
        self.loops = self.make_loops(pl_module.device)
        self.loop_ms = {name: [] for name in self.loops}
        self.ratios = {name: [] for name in self.loops}
        self.sync = synchronizer(pl_module.device)
        for loop in self.loops.values():
            for _ in range(self.warmup):
                loop.step()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.global_step
        started = bool(self.lightning_ms) or self._mark is not None
        if not started and step >= self.warmup or self._mark is not None and step - self._mark[1] >= self.block:
            self.sync()
            if self._mark is not None and self._clean:
                self.lightning_ms.append(1e3 * (clock() - self._mark[0]) / (step - self._mark[1]))
                for name, samples in self.loop_ms.items():
                    self.ratios[name].append(self.lightning_ms[-1] / samples[-1])
            self._mark = None
            if len(self.lightning_ms) < self.blocks:
                names = list(self.loops)
                shift = len(self.lightning_ms) % len(names)
                for name in names[shift:] + names[:shift]:
                    self.loop_ms[name].append(time_block(self.loops[name].step, self.block, self.sync))
                self._clean = True
                self._mark = (clock(), step)
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_validation_start(self, trainer, pl_module) -> None:
        self._clean = False
        super().on_validation_start(trainer, pl_module)


def lightning_vs_loops(problem: str, rule: str, resolution: int | None, batch: int | None, args: argparse.Namespace,
                       loops: dict[str, type], *extra: str) -> dict:
    """Interleaved step times (ms) of `train(cfg)` and of each of `loops` (name -> class built from the run's
    config) on one (problem, rule), with the paired ratios and the run's summary."""
    steps = args.warmup + (args.blocks + 1) * args.block + 1
    with tempfile.TemporaryDirectory() as scratch:
        cfg = run_config(problem, rule, resolution, batch, steps, Path(scratch), args,
                         f"trainer.val_check_interval={steps}", *extra)
        timer = InterleavedTimer(lambda device: {name: make(cfg, device) for name, make in loops.items()},
                                 args.warmup, args.block, args.blocks)
        summary = sip_train.run.train(cfg, step_timer=timer)
    if summary["status"] != "completed":
        raise RuntimeError(f"{problem}/{rule}: the Lightning run ended with status {summary['status']}")
    return {"lightning": timer.lightning_ms, **timer.loop_ms, "ratios": timer.ratios, "summary": summary}


def spread(samples: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range (first, third quartile) of samples."""
    if len(samples) < 2:
        value = samples[0] if samples else float("nan")
        return value, value, value
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return median, q1, q3


def fmt(samples: list[float]) -> str:
    """'median [q1-q3]' in ms."""
    median, q1, q3 = spread(samples)
    return f"{median:.4g} [{q1:.4g}-{q3:.4g}]"


def check(ratios: list[float], target: float | None) -> str:
    """Median [IQR] of paired ratios, marked pass/fail by the median against its target (if any)."""
    median, q1, q3 = spread(ratios)
    verdict = "" if target is None else f" {'✓' if median <= target else '✗'} (≤ {target:g})"
    return f"{median:.3f} [{q1:.3f}-{q3:.3f}]{verdict}"


def all_problems() -> list[str]:
    """Every problem with a config file in conf/problem."""
    return sorted(path.stem for path in (REPO / "conf" / "problem").glob("*.yaml"))


def trainable_rules(problem: str, rules: list[str] | tuple[str, ...]) -> list[str]:
    """The rules of `rules` that can train `problem` (SIP only where its class implements `inverse_update`)."""
    target = OmegaConf.load(REPO / "conf" / "problem" / f"{problem}.yaml").problem._target_
    return [rule for rule in rules if rule != "sip" or get_class(target).has_inverse_update()]


def available_problems(requested: list[str]) -> tuple[list[str], list[str]]:
    """The requested problems that have a config file, and those that are missing."""
    present = [p for p in requested if (REPO / "conf" / "problem" / f"{p}.yaml").exists()]
    return present, [p for p in requested if p not in present]


def quiet() -> None:
    """Silence Lightning's start-up chatter and warnings that do not concern the timing."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "sip_train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings("ignore", message=".*lru_cache.*")
