"""Constant tensors of a kernel (bases, spectral factors), built once per setting, dtype and device."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

Built = TypeVar("Built")


def device_constants(build: Callable[..., Built]) -> Callable[..., Built]:
    """Cache `build(*hashable settings, dtype, device)`: built outside inference mode, so tensors first made
    during a validation pass may still be used by autograd in training."""
    @functools.lru_cache(maxsize=32)
    @functools.wraps(build)
    def cached(*settings):
        with torch.inference_mode(False):
            return build(*settings)

    return cached
