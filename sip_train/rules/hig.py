"""Half-inverse gradients (Schnell, Holl, Thuerey, "Half-Inverse Gradients for Physical Deep Learning",
ICLR 2022) and the Gauss-Newton network update, for small networks.

Per step, the per-example Jacobians of the simulated output y_i = P(NN_theta(y*_i)) with respect to
all network parameters are stacked into J, (B * dim_y) x n_params, and decomposed J = U S V^T (thin
SVD). With g = dL/dy (the batch objective's gradient, per example and component), the update is

    theta <- theta - lr * V S^(-kappa) U^T g,

singular values below truncation * max(S) dropped (not clamped). kappa = 1/2 is HIG, kappa = 1 the
Gauss-Newton (pseudo-inverse) step, kappa = -1 the plain gradient J^T g, kappa = 0 the gradient
with every singular direction weighted equally.
"""
from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from sip_train import values
from sip_train.problems.base import InverseProblem, Observed
from sip_train.rules.base import OptimizerFactory, StepInterface, UpdateRule


def stacked_jacobian(
    problem: InverseProblem, network: nn.Module, y_target: torch.Tensor, chunk_size: int | None = None,
    observed: Observed = (),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """J = d y_i / d theta for every example i, stacked to (B * dim_y, n_params), with y = P(x) (B, *y_shape)
    and the prediction x (B, ...), all detached.

    Rows are example-major (row i * dim_y + k is component k of example i); columns follow
    `network.named_parameters()` (trainable ones). Computed by vmap over the examples of reverse-mode
    Jacobians (dim_y vector-Jacobian products each), `chunk_size` examples at a time (None: all).
    """
    params = {name: p.detach() for name, p in network.named_parameters() if p.requires_grad}
    frozen = {**{name: p.detach() for name, p in network.named_parameters() if not p.requires_grad},
              **dict(network.named_buffers())}

    def simulate_one(weights: dict[str, torch.Tensor], target: torch.Tensor, known: Observed
                     ) -> tuple[torch.Tensor, tuple]:
        batch = target.unsqueeze(0)
        raw = functional_call(network, (weights, frozen), (problem.network_input(batch),))
        x = problem.prepare_prediction(raw, batch)
        y = problem.simulate(x, *(k.unsqueeze(0) for k in known))[0]
        return y.flatten(), (y, x[0])

    jacobians, (y, x) = vmap(jacrev(simulate_one, has_aux=True), in_dims=(None, 0, 0), chunk_size=chunk_size)(
        params, y_target, tuple(observed))
    rows = y[0].numel() * len(y_target)
    return torch.cat([j.reshape(rows, -1) for j in jacobians.values()], dim=1), y, x


def inverse_direction(
    jacobian: torch.Tensor, gradient: torch.Tensor, kappa: float, truncation: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """d = V S^(-kappa) U^T g from the thin SVD of J (m, n) and g (m,), singular values
    S <= truncation * max(S) dropped. Returns d (n,), all singular values S and the mask of those kept."""
    if jacobian.shape[0] < jacobian.shape[1]:  # LAPACK decomposes the tall J^T = V S U^T about 3x faster (measured)
        v, s, uh = torch.linalg.svd(jacobian.mT, full_matrices=False)
        u, vh = uh.mT, v.mT
    else:
        u, s, vh = torch.linalg.svd(jacobian, full_matrices=False)
    kept = s > truncation * s.max()
    scale = torch.where(kept, s.clamp_min(torch.finfo(s.dtype).tiny).pow(-kappa), torch.zeros_like(s))
    return vh.mT @ (scale * (u.mT @ gradient)), s, kept


class ElapsedMs:
    """Milliseconds a piece of work took, measured without making the host wait: between two CUDA events
    on a GPU, read (`float()`) only when the value is logged; by the host clock on the CPU, where the work
    runs on the host anyway."""

    def __init__(self, device: torch.device) -> None:
        self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) \
            if device.type == "cuda" else None
        self._host = [0.0, 0.0]

    def __enter__(self) -> "ElapsedMs":
        if self._events is not None:
            self._events[0].record()
        else:
            self._host[0] = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._events is not None:
            self._events[1].record()
        else:
            self._host[1] = time.perf_counter()

    def __float__(self) -> float:
        if self._events is None:
            return 1e3 * (self._host[1] - self._host[0])
        self._events[1].synchronize()
        return self._events[0].elapsed_time(self._events[1])


def memory_estimate_bytes(rows: int, params: int, itemsize: int) -> int:
    """Bytes of J (rows x params), the copy LAPACK decomposes and the thin factors U, V of its SVD."""
    rank = min(rows, params)
    return itemsize * (2 * rows * params + rows * rank + rank * params + rank)


class HalfInverseGradient(UpdateRule):
    """Network update -lr V S^(-kappa) U^T g from the SVD of the stacked per-example Jacobian dy/dtheta.

    The direction is written into the parameters' .grad and stepped by the rule's optimizer (plain
    SGD: lr is the paper's eta), so the trainer's step counter advances and checkpoints hold its state.
    Logged per step: sv_max, sv_min_kept (the largest and smallest singular values kept), sv_kept
    (how many) and svd_ms (time of the SVD, read only on log steps). Meant for small networks: `check`
    refuses, before training, networks whose Jacobian and SVD exceed `memory_budget_gb`, and networks with
    batch normalisation (which couples the examples, so per-example Jacobians do not exist). One device
    only (`single_process`): nothing averages its directions across processes.

    Args:
        optimizer: torch optimizer class or partial stepping the direction (SGD).
        lr: step size eta (1.0 on the oscillators in the paper).
        kappa: inversion power: 0.5 HIG, 1 Gauss-Newton, -1 plain gradient; in [-1, 1].
        truncation: singular values below truncation * max(S) are dropped (1e-6 in the paper).
        batch_size: training examples per step (wired to data.batch_size), for the memory estimate.
        memory_budget_gb: largest estimated memory of J and its SVD.
        jacobian_chunk: examples per vmap chunk of the Jacobian (None: the whole batch at once).
    """

    single_process = True

    def __init__(self, optimizer: OptimizerFactory, lr: float, kappa: float = 0.5, truncation: float = 1e-6,
                 batch_size: int = 128, memory_budget_gb: float = 2.0, jacobian_chunk: int | None = None,
                 create_graph: bool = False) -> None:
        super().__init__(optimizer, lr, create_graph)
        self.kappa = values.number("optimizer.kappa", kappa, "[-1, 1]")
        self.truncation = values.number("optimizer.truncation", truncation, "[0, 1)")
        self.batch_size = batch_size
        self.memory_budget_gb = values.number("optimizer.memory_budget_gb", memory_budget_gb)
        self.jacobian_chunk = values.integer("optimizer.jacobian_chunk", jacobian_chunk, optional=True)

    def check(self, problem: InverseProblem, network: nn.Module) -> None:
        _, y_target, *observed = problem.sample(1, torch.Generator().manual_seed(0))
        dim_y = math.prod(problem.y_shape)
        params = sum(p.numel() for p in network.parameters() if p.requires_grad)
        itemsize = torch.promote_types(y_target.dtype, next(network.parameters()).dtype).itemsize
        needed = memory_estimate_bytes(self.batch_size * dim_y, params, itemsize) / 2**30
        if needed > self.memory_budget_gb:
            raise ValueError(
                f"optimizer=hig needs {needed:.3g} GB for the Jacobian and its SVD (batch {self.batch_size} x "
                f"dim_y {dim_y} = {self.batch_size * dim_y} rows, {params} network parameters), over "
                f"optimizer.memory_budget_gb={self.memory_budget_gb}: use a smaller network or batch")
        norms = sorted({type(m).__name__ for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)})
        if norms:
            raise ValueError(f"optimizer=hig cannot train network {type(network).__name__}: its {', '.join(norms)} "
                             "couples the examples of a batch, so per-example Jacobians do not exist; use a network "
                             "without batch normalisation (e.g. network=mlp)")
        try:
            stacked_jacobian(problem, network, y_target, observed=tuple(observed))
        except RuntimeError as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"optimizer=hig cannot differentiate problem {type(problem).__name__} per example "
                             f"with torch.func (vmap + jacrev): {first_line}") from error

    def training_step(self, step: StepInterface, y_target: torch.Tensor, *observed: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        problem, network = step.problem, step.network
        jacobian, y, x = stacked_jacobian(problem, network, y_target, self.jacobian_chunk, observed)
        y_leaf = y.requires_grad_()
        loss = problem.reduce(problem.y_loss(y_leaf, y_target))
        gradient = torch.autograd.grad(loss, y_leaf)[0].flatten().to(jacobian.dtype)
        with ElapsedMs(jacobian.device) as svd_ms:
            try:
                direction, singular_values, kept = inverse_direction(jacobian, gradient, self.kappa, self.truncation)
            except torch.linalg.LinAlgError:  # a non-finite J (diverged): NaN weights, which the divergence check reports
                direction = singular_values = torch.full_like(jacobian[0], math.nan)
                kept = torch.zeros_like(direction, dtype=torch.bool)

        optimizer = step.optimizer()
        optimizer.zero_grad()
        trainable = [p for p in network.parameters() if p.requires_grad]
        for p, chunk in zip(trainable, direction.split([p.numel() for p in trainable])):
            p.grad = chunk.view_as(p).to(p.dtype).clone()
        optimizer.step()
        stats = {"sv_max": singular_values.max(), "sv_min_kept": singular_values.masked_fill(~kept, math.inf).min(),
                 "sv_kept": kept.sum().to(singular_values.dtype), "svd_ms": svd_ms}
        return {"loss": loss.detach(), "x": x, "y": y.detach(), "stats": stats}
