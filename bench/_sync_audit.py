"""Audit of the host-device synchronisations in training steps: every call that would make the host wait
for a GPU, counted per phase (training step, validation and checkpoint, bare-loop step) with the line that
makes it. On a GPU this is `torch.cuda.set_sync_debug_mode("warn")`; on a CPU a TorchFunctionMode records
the calls that would synchronise a GPU (host reads of tensor values, value-dependent shapes, Python data
copied to the device by `torch.tensor(..., device=...)`)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable

import torch
from torch.overrides import TorchFunctionMode

from _loops import BareLoop, device_of, replaced_step_timer, run_config
from _report import REPO, markdown_table
import sip_train.run
from sip_train.callbacks import DivergenceGuard, StepTimer

HOST_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "__format__",
              "__repr__"}
VALUE_DEPENDENT_SHAPES = {"nonzero", "masked_select", "unique", "unique_consecutive", "argwhere"}
TORCH_DIR = Path(torch.__file__).resolve().parent
#: torch code whose tensor reads stay on the host on a GPU too: the optimizers' step counters (unless
#: capturable or fused) and the data loader's seeds. The CPU stand-in ignores calls from there.
HOST_STATE = (TORCH_DIR / "optim", TORCH_DIR / "utils" / "data")
SITE_PACKAGES = TORCH_DIR.parent
OURS = REPO / "sip_train"
#: functions of ours that read host tensors on a GPU too (convergence flags, copied to pinned memory).
HOST_STATE_FUNCTIONS = {(OURS / "convergence.py", "_seen")}


class SyncRecorder:
    """Counts synchronising calls per (phase, operation, call site, line of ours that leads there)."""

    def __init__(self, skip_host_state: bool) -> None:
        self.phase = "setup"
        self.calls: Counter[tuple[str, str, str, str]] = Counter()
        self.skip_host_state = skip_host_state

    def record(self, operation: str, stack: traceback.StackSummary) -> None:
        files = [Path(frame.filename).resolve() for frame in stack]
        # the innermost caller only: rules run their whole step inside torch.optim's step(closure)
        if self.skip_host_state and (any(folder in files[-1].parents for folder in HOST_STATE)
                                     or (files[-1], stack[-1].name) in HOST_STATE_FUNCTIONS):
            return
        outside_torch = [(frame, path) for frame, path in zip(stack, files)
                         if TORCH_DIR not in path.parents and path.name != "warnings.py"]
        if not outside_torch:
            return
        site = self._where(*outside_torch[-1])
        # the line of ours that leads there (run.py only calls trainer.fit), else the library's caller
        # outside its utility helpers
        ours = [pair for pair in outside_torch if OURS in pair[1].parents and pair[1].name != "run.py"]
        library = [pair for pair in outside_torch if SITE_PACKAGES in pair[1].parents
                   and not any("utilities" in part for part in pair[1].relative_to(SITE_PACKAGES).parts)]
        via = self._where(*ours[-1]) if ours else (self._where(*library[-1]) if library else "")
        self.calls[self.phase, operation, site, via] += 1

    @staticmethod
    def _where(frame: traceback.FrameSummary, path: Path) -> str:
        root = SITE_PACKAGES if SITE_PACKAGES in path.parents else REPO if REPO in path.parents else path.parent
        return f"{path.relative_to(root)}:{frame.lineno} ({frame.name})"


class HostReadAudit(TorchFunctionMode):
    """CPU stand-in for `torch.cuda.set_sync_debug_mode`: records the torch calls that synchronise a
    CUDA device (host reads of values, value-dependent output shapes, `torch.tensor(<host data>,
    device=...)`). Blind to `.to(device)` of host tensors: on a CPU every tensor is a host tensor."""

    def __init__(self, recorder: SyncRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        operation = self.synchronising(func, args, kwargs)
        if operation is not None:
            self.recorder.record(operation, traceback.extract_stack()[:-1])
        return func(*args, **kwargs)

    @staticmethod
    def synchronising(func, args: tuple, kwargs: dict) -> str | None:
        """Which kind of synchronisation a call makes on a CUDA device, or None."""
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            return f"Tensor.{name} (device-to-host read)"
        if name in VALUE_DEPENDENT_SHAPES or (name == "where" and len(args) == 1 and not kwargs):
            return f"{name} (output shape depends on values)"
        if name in ("__getitem__", "__setitem__") and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                return "boolean-mask indexing (output shape depends on values)"
        if name in ("tensor", "as_tensor") and kwargs.get("device") is not None and args \
                and not isinstance(args[0], torch.Tensor):
            return f"torch.{name}(<host data>, device=...) (blocking host-to-device copy)"
        return None


class CudaSyncAudit:
    """`torch.cuda.set_sync_debug_mode("warn")`, each warning recorded with the stack that raised it."""

    def __init__(self, recorder: SyncRecorder) -> None:
        self.recorder = recorder

    def __enter__(self) -> CudaSyncAudit:
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        self._previous = warnings.showwarning
        warnings.filterwarnings("always", message="called a synchronizing CUDA operation")
        warnings.showwarning = self._show
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._warnings.__exit__(*exc)

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchronizing CUDA operation" in str(message):
            self.recorder.record("CUDA synchronisation (sync debug mode)", traceback.extract_stack()[:-1])
        else:
            self._previous(message, category, filename, lineno, file, line)


def sync_audit(device: torch.device, recorder: SyncRecorder) -> contextlib.AbstractContextManager:
    """The audit that fits the device: CUDA's sync debug mode, or the CPU stand-in."""
    return CudaSyncAudit(recorder) if device.type == "cuda" else HostReadAudit(recorder)


def wrap_method(owner: object, name: str, around: Callable[[], contextlib.AbstractContextManager]) -> None:
    """Make `owner.name(...)` run inside a fresh `around()` context (an instance attribute over the method)."""
    method = getattr(owner, name)

    @functools.wraps(method)
    def wrapped(*args, **kwargs):
        with around():
            return method(*args, **kwargs)

    setattr(owner, name, wrapped)


class AuditTimer(StepTimer):
    """The run's StepTimer, which audits every update from the second on, per phase: the training step
    (data, update, Lightning's hooks: counted per update, so several updates per Lightning step count
    each), the training log write of a log step, the divergence guard's device read, and validation with
    its checkpoint."""

    def __init__(self, recorder: SyncRecorder) -> None:
        super().__init__()
        self.recorder = recorder
        self.counts: Counter[str] = Counter()
        self._audit: contextlib.AbstractContextManager | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        guard = next(c for c in trainer.callbacks if isinstance(c, DivergenceGuard))
        wrap_method(pl_module, "_update", lambda: self._update(pl_module))
        wrap_method(pl_module, "_log_training", lambda: self._phase("log write"))
        wrap_method(guard, "_state", lambda: self._phase("divergence check"))

    @contextlib.contextmanager
    def _update(self, pl_module):
        if self._audit is None and pl_module.global_step >= 1:
            self._audit = sync_audit(pl_module.device, self.recorder)
            self._audit.__enter__()
        if self._audit is not None:
            self.recorder.phase = "training step"
            self.counts["training step"] += 1
        yield

    @contextlib.contextmanager
    def _phase(self, phase: str):
        before = self.recorder.phase
        if self._audit is not None:
            self.recorder.phase = phase
            self.counts[phase] += 1
        try:
            yield
        finally:
            self.recorder.phase = before

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._audit is not None:
            self.recorder.phase = "training step"
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.recorder.phase = "validation and checkpoint"
        self.counts["validation and checkpoint"] += self._audit is not None
        super().on_validation_start(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self._audit is not None:
            self._audit.__exit__(None, None, None)
            self._audit = None


def audit_configuration(problem: str, rule: str, resolution: int, batch: int,
                        args: argparse.Namespace) -> dict[str, Counter]:
    """Synchronising calls per training update, per log write, per divergence check, per validation, and per
    bare-loop step of one (problem, rule), through two log steps, three divergence checks and one validation,
    with the problem's own updates_per_step."""
    steps = 2 * 10 + 6  # log_every_n_steps and divergence_check_every are 10; validation at step 25
    device = device_of(args.device)
    recorder = SyncRecorder(skip_host_state=device.type == "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        cfg = run_config(problem, rule, resolution, batch, steps, Path(scratch), args,
                         f"trainer.val_check_interval={steps - 1}", "trainer.log_every_n_steps=10",
                         "divergence_check_every=10", "figure_examples=3")
        timer = AuditTimer(recorder)
        with replaced_step_timer(timer):
            summary = sip_train.run.train(cfg)
        if summary["status"] != "completed":
            raise RuntimeError(f"{problem}/{rule}: audit run ended with status {summary['status']}")
        bare = BareLoop(cfg, device)
    for _ in range(2):
        bare.step()
    bare_steps = 10
    recorder.phase = "bare-loop step"
    with sync_audit(device, recorder):
        for _ in range(bare_steps):
            bare.step()
    per = {**timer.counts, "bare-loop step": bare_steps}
    rates: dict[str, Counter] = {}
    for (phase, operation, site, via), count in recorder.calls.items():
        rates.setdefault(phase, Counter())[operation, site, via] = count / per[phase]
    return rates


def audit_table(audits: dict[tuple[str, str], dict[str, Counter]]) -> str:
    """Synchronising calls per step (per validation), merged over the audited (problem, rule) pairs."""
    merged: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for (problem, rule), phases in audits.items():
        for phase, calls in phases.items():
            for (operation, site, via), rate in calls.items():
                merged.setdefault((phase, operation, site, via), {})[f"{problem}/{rule}"] = rate
    everyone = len(audits)
    rows = []
    for (phase, operation, site, via), rates in sorted(merged.items()):
        values = sorted(set(round(v, 3) for v in rates.values()))
        rate = f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}-{values[-1]:g}"
        where = "all" if len(rates) == everyone else ", ".join(sorted(rates))
        rows.append([phase, rate, operation, f"`{site}`", f"`{via}`" if via and via != site else "", where])
    if not rows:
        return "No synchronising call found."
    return markdown_table(["phase", "calls per step", "operation", "call site", "reached from", "runs"], rows)


class SyncFreeSteps(StepTimer):
    """The run's StepTimer, which forbids host-device synchronisation in every training step after `warmup`
    updates except in its log writes and the divergence check at its end: `torch.cuda.set_sync_debug_mode
    ("error")` on a GPU (a synchronising call raises, and the run fails with its stack), the CPU stand-in
    otherwise. Counts the updates it checked (several per Lightning step with updates_per_step > 1)."""

    def __init__(self, warmup: int) -> None:
        super().__init__()
        self.warmup = warmup
        self.checked_steps = 0
        self._forbidden: contextlib.AbstractContextManager | None = None
        self._device: torch.device | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._device = pl_module.device
        wrap_method(pl_module, "_update", lambda: self._counted(pl_module))
        wrap_method(pl_module, "_log_training", self._allowed)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)
        if trainer.global_step >= self.warmup:
            self._forbid()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._allow()  # this callback comes first: before the divergence check reads the device

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._allow()

    @contextlib.contextmanager
    def _counted(self, pl_module):
        """An update: forbidden from the `warmup`-th on (also inside a Lightning step that began earlier)."""
        if self._forbidden is None and pl_module.global_step >= self.warmup:
            self._forbid()
        self.checked_steps += self._forbidden is not None
        yield

    @contextlib.contextmanager
    def _allowed(self):
        """A log write inside a step: synchronisation allowed for its duration."""
        forbidden = self._forbidden is not None
        self._allow()
        try:
            yield
        finally:
            if forbidden:
                self._forbid()

    def _forbid(self) -> None:
        self._forbidden = forbid_syncs(self._device)
        self._forbidden.__enter__()

    def _allow(self) -> None:
        if self._forbidden is not None:
            self._forbidden.__exit__(None, None, None)
            self._forbidden = None


class _Forbidden(SyncRecorder):
    """A recorder that fails at the first synchronising call."""

    def record(self, operation: str, stack: traceback.StackSummary) -> None:
        super().record(operation, stack)
        if self.calls:
            (_, operation, site, via), _ = self.calls.popitem()
            raise RuntimeError(f"host-device synchronisation in a training step: {operation} at {site} via {via}")


@contextlib.contextmanager
def forbid_syncs(device: torch.device):
    """Raise at any host-device synchronisation inside: CUDA's sync debug mode "error", or the CPU stand-in."""
    if device.type != "cuda":
        with HostReadAudit(_Forbidden(skip_host_state=True)):
            yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def assert_sync_free(problem: str, rule: str, resolution: int | None, batch: int | None, args: argparse.Namespace,
                     steps: int = 40, *extra: str) -> int:
    """Train `steps` steps of one (problem, rule) with synchronisation forbidden in every training step but its
    log writes and divergence checks (after 2 warm-up steps); returns how many updates were checked, or raises
    with the run's status (which names the synchronising call)."""
    with tempfile.TemporaryDirectory() as scratch:
        cfg = run_config(problem, rule, resolution, batch, steps, Path(scratch), args,
                         f"trainer.val_check_interval={steps}", "trainer.log_every_n_steps=10",
                         "divergence_check_every=10", *extra)
        timer = SyncFreeSteps(warmup=2)
        with replaced_step_timer(timer):
            summary = sip_train.run.train(cfg)
    if summary["status"] != "completed" or timer.checked_steps == 0:
        raise RuntimeError(f"{problem}/{rule}: {summary['status']} ({timer.checked_steps} steps checked)")
    return timer.checked_steps
