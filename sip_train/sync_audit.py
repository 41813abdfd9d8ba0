"""Audit of host-device synchronisations in training: every call that would make the host wait for a GPU,
counted per phase of a step with the line that makes it, or refused where a phase must not synchronise.

On a GPU this is `torch.cuda.set_sync_debug_mode("warn")`; on a CPU a TorchFunctionMode stands in for it,
recording the calls that would synchronise a GPU (host reads of tensor values, value-dependent shapes,
Python data copied to the device by `torch.tensor(..., device=...)`). The phases come from public hooks
only: Lightning's callback hooks and torch's optimizer step hooks (one step per update, also when a
Lightning step makes several).
"""
from __future__ import annotations

import contextlib
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig
from torch.overrides import TorchFunctionMode

import sip_train.run
from sip_train.callbacks import StepTimer

HOST_READS = {"item", "__bool__", "__int__", "__float__", "__index__", "tolist", "numpy", "cpu", "__format__",
              "__repr__"}
VALUE_DEPENDENT_SHAPES = {"nonzero", "masked_select", "unique", "unique_consecutive", "argwhere"}
TORCH_DIR = Path(torch.__file__).resolve().parent
#: torch code whose tensor reads stay on the host on a GPU too: the optimizers' step counters (unless
#: capturable or fused) and the data loader's seeds. The CPU stand-in ignores calls from there.
HOST_STATE = (TORCH_DIR / "optim", TORCH_DIR / "utils" / "data")
SITE_PACKAGES = TORCH_DIR.parent
OURS = Path(__file__).resolve().parent
REPO = OURS.parent
#: functions of ours that read host tensors on a GPU too (convergence flags, copied to pinned memory).
HOST_STATE_FUNCTIONS = {(OURS / "convergence.py", "_seen")}

TRAINING = "training step"  # an update: its data, the rule's step, Lightning's hooks around it
LOG_WRITE = "log write"  # the training metrics row written by the update that reaches a log step
VALIDATION = "validation and checkpoint"
AFTER_STEP = "after the step"  # the callbacks' on_train_batch_end; a call is labelled with its callback
#: What may synchronise: the log write, validation (until the next step starts), the divergence guard's
#: periodic read and the checkpoint callback (it reads only when it saves: at validations and at the end).
ALLOWED = frozenset({LOG_WRITE, VALIDATION, "DivergenceGuard", "ModelCheckpoint"})


def _calling_callback() -> str | None:
    """The class name of the innermost Lightning callback on the call stack, if any."""
    frame = sys._getframe(2)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, Callback):
            return type(owner).__name__
        frame = frame.f_back
    return None


class SyncRecorder:
    """Counts synchronising calls per (phase, operation, call site, line of ours that leads there).

    Args:
        skip_host_state: ignore reads of what stays on the host on a GPU too (the CPU stand-in).
        allowed: None to count every call; else the phases that may synchronise, and any other raises.
    """

    def __init__(self, skip_host_state: bool, allowed: frozenset[str] | None = None) -> None:
        self.phase = "setup"
        self.calls: Counter[tuple[str, str, str, str]] = Counter()
        self.skip_host_state = skip_host_state
        self.allowed = allowed

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
        ours = [pair for pair in outside_torch if OURS in pair[1].parents and pair[1].name not in ("run.py",
                                                                                                   "sync_audit.py")]
        library = [pair for pair in outside_torch if SITE_PACKAGES in pair[1].parents
                   and not any("utilities" in part for part in pair[1].relative_to(SITE_PACKAGES).parts)]
        via = self._where(*ours[-1]) if ours else (self._where(*library[-1]) if library else "")
        phase = self.phase
        if phase == AFTER_STEP:  # the next step's data is made here too, before its first hook
            phase = _calling_callback() or TRAINING
        if self.allowed is not None and phase not in self.allowed:
            raise RuntimeError(f"host-device synchronisation in a training step: {operation} at {site} via {via}"
                               f" ({phase})")
        self.calls[phase, operation, site, via] += 1

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


class PhaseTracker(StepTimer):
    """The run's StepTimer, which also tells the recorder which phase of training runs, from update
    `warmup` on, and counts the phases audited.

    Training steps are updates, delimited by the optimizer's step hooks; the update that reaches a log step
    (its global step a multiple of `log_every_n_steps`) writes the training row after its optimizer step,
    until the next update or the end of the Lightning step; then the callbacks' `on_train_batch_end`
    (this one runs first), and validation with its checkpoint and figure until the next step starts.
    """

    def __init__(self, recorder: SyncRecorder, warmup: int = 1) -> None:
        super().__init__()
        self.recorder = recorder
        self.warmup = warmup
        self.counts: Counter[str] = Counter()
        self._audit: contextlib.AbstractContextManager | None = None
        self._device = torch.device("cpu")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._device = pl_module.device
        for optimizer in trainer.optimizers:
            optimizer.register_step_pre_hook(lambda *_: self._enter(trainer, TRAINING))
            optimizer.register_step_post_hook(lambda *_: self._after_update(trainer))

    def _enter(self, trainer: Trainer, phase: str) -> None:
        if self._audit is None and trainer.global_step >= self.warmup:
            self._audit = sync_audit(self._device, self.recorder)
            self._audit.__enter__()
        self.recorder.phase = phase

    def _after_update(self, trainer: Trainer) -> None:
        """The optimizer has stepped; the global step advances when this returns."""
        if self._audit is not None:
            self.counts[TRAINING] += 1
            if (trainer.global_step + 1) % trainer.log_every_n_steps == 0:
                self.recorder.phase = LOG_WRITE
                self.counts[LOG_WRITE] += 1

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch, batch_idx: int) -> None:
        self._enter(trainer, TRAINING)
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.recorder.phase = AFTER_STEP
        self.counts[AFTER_STEP] += self._audit is not None

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.recorder.phase = VALIDATION
        self.counts[VALIDATION] += self._audit is not None
        super().on_validation_start(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._leave()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._audit is not None:
            self._audit.__exit__(None, None, None)
            self._audit = None
        self.recorder.phase = "teardown"

    def rates(self) -> dict[str, Counter]:
        """Synchronising calls per audited update (training step), per log write, per Lightning step (after the
        step, per callback) and per validation: phase -> (operation, site, via) -> rate."""
        per = {TRAINING: self.counts[TRAINING], LOG_WRITE: self.counts[LOG_WRITE],
               VALIDATION: self.counts[VALIDATION]}
        rates: dict[str, Counter] = {}
        for (phase, operation, site, via), count in self.recorder.calls.items():
            if phase in ("setup", "teardown"):
                continue
            divisor = per.get(phase, self.counts[AFTER_STEP])  # a callback's calls: per Lightning step
            rates.setdefault(phase, Counter())[operation, site, via] = count / max(divisor, 1)
        return rates


class _Terminal:
    """A stream that says it is a terminal (what the progress bar checks), writing to another."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def isatty(self) -> bool:
        return True

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def audit_run(cfg: DictConfig, forbid: bool = False, warmup: int = 1, terminal: bool = False
              ) -> tuple[dict, PhaseTracker]:
    """Train `cfg` with every synchronising call from update `warmup` on recorded (`forbid`: any outside the
    log write, validation and the divergence guard's read raises RuntimeError naming it), with stdout taken
    for a terminal if `terminal` (the progress bar's mode there); returns the run's summary and the tracker
    (its `rates()`, its `counts`)."""
    device = torch.device("cuda" if cfg.trainer.get("accelerator") == "gpu" else "cpu")
    recorder = SyncRecorder(skip_host_state=device.type == "cpu", allowed=ALLOWED if forbid else None)
    tracker = PhaseTracker(recorder, warmup)
    stdout = contextlib.redirect_stdout(_Terminal(sys.stdout)) if terminal else contextlib.nullcontext()
    with stdout:
        summary = sip_train.run.train(cfg, step_timer=tracker)
    return summary, tracker
