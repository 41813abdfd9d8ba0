"""Whether an iterative solve may stop, decided on the host from a flag on the device without waiting for it."""
from __future__ import annotations

from collections import deque
from typing import Callable

import torch


class StopFlag:
    """Tells a batched iterative solver's host loop when every example has converged.

    Every `check_every` iterations the solver posts its on-device "all converged" flag. On a GPU the flag is
    copied to pinned host memory without blocking and read only once its copy has landed (a CUDA event that
    has completed), so the loop never waits for the device and ends a few iterations late; on the CPU, where
    a read costs nothing, it is read at once. Solvers freeze converged examples, so the late end changes no
    result.

    Args:
        device: where the solver computes.
        check_every: iterations between posts; None: 10 on a GPU, 1 on the CPU.
    """

    def __init__(self, device: torch.device, check_every: int | None = None) -> None:
        self.on_gpu = device.type == "cuda"
        self.check_every = check_every or (10 if self.on_gpu else 1)
        self.pending: deque[tuple[torch.cuda.Event | None, torch.Tensor]] = deque()

    def should_stop(self, iteration: int, all_converged: Callable[[], torch.Tensor]) -> bool:
        """At every `check_every`-th iteration post `all_converged()` (a boolean scalar on the device); whether a
        flag that has reached the host says that every example has converged."""
        if iteration % self.check_every:
            return False
        self._post(all_converged())
        return self._seen()

    def _post(self, flag: torch.Tensor) -> None:
        if not self.on_gpu:
            self.pending.append((None, flag))
            return
        host = torch.empty((), dtype=torch.bool, pin_memory=True)
        host.copy_(flag, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((event, host))

    def _seen(self) -> bool:
        while self.pending and (self.pending[0][0] is None or self.pending[0][0].query()):
            if bool(self.pending.popleft()[1]):
                return True
        return False
