"""Whether a run's data and network fit into the memory of its device, estimated before anything is created."""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch
from torch import nn

from sip_train.data import SyntheticData
from sip_train.problems.base import InverseProblem

GB = 1e9
#: Per training example, copies of x and y a step holds besides the network's activations: the batch, the
#: prediction, the simulated y, the gradients and the update rule's intermediates.
STEP_COPIES = 4


def activation_bytes(problem: InverseProblem, network: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of every layer output for one example (what a backward pass keeps), from a forward pass on
    PyTorch's meta device, which allocates nothing; 0 for a network that cannot run there."""
    total = 0

    def count(module: nn.Module, inputs: object, output: object) -> None:
        nonlocal total
        for tensor in output if isinstance(output, (tuple, list)) else [output]:
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()

    try:
        meta = copy.deepcopy(network).to("meta")
        for layer in meta.modules():
            if not list(layer.children()):
                layer.register_forward_hook(count)
        with torch.no_grad():
            meta(problem.network_input(torch.empty((1, *problem.y_shape), dtype=dtype, device="meta")))
    except Exception:  # noqa: BLE001 - an estimate: without the activations it counts the data only
        return 0
    return total


def available_bytes(device: torch.device) -> int:
    """Free memory of a CUDA device, or the memory the operating system can still give this process."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def check_memory(problem: InverseProblem, network: nn.Module, data: SyntheticData, device: torch.device) -> None:
    """Refuse, in one line, a run whose fixed data sets plus one training step would not fit into the device's
    free memory (an estimate from the problem's shapes, in the widest float type of its buffers, and a
    meta-device pass of the network; nothing is sampled, which could itself take long).

    Raises:
        ValueError: naming the sizes, the estimate and what is free.
    """
    dtype = max((b.dtype for b in problem.buffers() if b.is_floating_point()), default=torch.get_default_dtype(),
                key=lambda t: t.itemsize)
    example = (math.prod(problem.x_shape) + math.prod(problem.y_shape)) * dtype.itemsize
    fixed = (data.val_size + (data.train_size or 0)) * example
    drawn = data.batch_size * (data.steps_per_draw if data.train_size is None else 1)
    step = drawn * example + data.batch_size * (STEP_COPIES * example + activation_bytes(problem, network, dtype))
    free = available_bytes(device)
    if fixed + step > free:
        raise ValueError(
            f"the run needs about {(fixed + step) / GB:.1f} GB of {device.type} memory, {free / GB:.1f} GB are free: "
            f"{fixed / GB:.1f} GB for the fixed data sets (data.val_size={data.val_size}, data.train_size="
            f"{data.train_size}; x and y of {tuple(problem.x_shape)} and {tuple(problem.y_shape)}), {step / GB:.1f} GB for one "
            f"training step (data.batch_size={data.batch_size}); lower data.batch_size, data.val_size or the problem's size")
