"""Hessian-free (truncated Newton) optimisation after Martens (2010) and Martens & Sutskever (2012).

Each step minimises the damped quadratic model of the loss f(theta),

    q(p) = f + g^T p + 1/2 p^T B p,      (B + lambda I) p = -g,

with conjugate gradient (CG), using only curvature-vector products B v: the generalised
Gauss-Newton matrix B = G = J^T (d2L/dx2) J of loss = L(x(theta)) (J = dx/dtheta, x the
network output), or the true Hessian of f. The CG iterates are backtracked, the step size is
found by an Armijo line search, and lambda follows the Levenberg-Marquardt rule on the
reduction ratio rho = (f(theta + p) - f(theta)) / (q(p) - q(0)). `HessianFreeRule` trains a
network on an inverse problem with it (`optimizer=hessian_free`).

References:
    J. Martens, "Deep learning via Hessian-free optimization", ICML 2010.
    J. Martens, I. Sutskever, "Training deep and recurrent networks with Hessian-free
    optimization", Neural Networks: Tricks of the Trade, 2012.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
import torch
from torch import Tensor, nn

from sip_train import values
from sip_train.convergence import StopFlag
from sip_train.rules.base import StepInterface
from sip_train.rules.gradient import PhysicsGradient

CURVATURES = ("ggn", "hessian")
Forward = Callable[[], tuple[Tensor, Tensor | None]]
MatVec = Callable[[Tensor], Tensor]


def _flat(tensors: Iterable[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def _split(vector: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    sizes = [t.numel() for t in like]
    return [chunk.view_as(t) for chunk, t in zip(vector.split(sizes), like)]


def _vjp(outputs: Sequence[Tensor], inputs: Sequence[Tensor], cotangents: Sequence[Tensor],
         create_graph: bool = False) -> list[Tensor]:
    """Sum_i cotangent_i^T d output_i / d inputs, skipping outputs that do not depend on inputs."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(t) for t in inputs]
    return list(torch.autograd.grad([o for o, _ in pairs], inputs, [c for _, c in pairs],
                                    retain_graph=True, create_graph=create_graph,
                                    materialize_grads=True))


def gauss_newton_product(loss: Tensor, output: Tensor, params: Sequence[Tensor]) -> MatVec:
    """Generalised Gauss-Newton product v -> G v = J^T (d2L/dx2) J v for loss = L(x(theta)).

    J v is obtained by the double-vjp trick: J^T u is linear in a dummy u, so its vjp with
    cotangent v is J v. The graphs of `loss` and `output` must still be alive.

    Args:
        loss: scalar L(x), twice differentiable in x.
        output: the split point x (any shape), a function of `params`.
        params: the parameters theta.

    Returns:
        Function mapping a flat vector (numel of params,) to the flat product G v.
    """
    dloss_dx = torch.autograd.grad(loss, output, create_graph=True)[0]
    dummy = torch.zeros_like(output, requires_grad=True)
    jacobian_t_dummy = _vjp([output], params, [dummy], create_graph=True)

    def product(vector: Tensor) -> Tensor:
        jv = _vjp(jacobian_t_dummy, [dummy], _split(vector, params))[0]
        hjv = _vjp([dloss_dx], [output], [jv])[0]
        return _flat(_vjp([output], params, [hjv]))

    return product


def hessian_product(loss: Tensor, params: Sequence[Tensor]) -> MatVec:
    """Hessian product v -> (d2 loss / dtheta2) v by double backward (Pearlmutter).

    Args:
        loss: scalar, twice differentiable in `params`; its graph must still be alive.
        params: the parameters theta.

    Returns:
        Function mapping a flat vector (numel of params,) to the flat product H v.
    """
    gradient = _vjp([loss], params, [torch.ones_like(loss)], create_graph=True)
    return lambda vector: _flat(_vjp(gradient, params, _split(vector, params)))


@dataclass
class ConjugateGradientResult:
    """Iterates of a CG run on A p = b, all on the device.

    Attributes:
        iterations: number of CG iterations performed (0-dim int64 tensor).
        iterates: (iteration, p, phi(p)) at the stored iterations, then the final iterate (its iteration a
            0-dim tensor); phi(p) = 1/2 p^T A p - b^T p is the CG quadratic objective (0-dim float64 tensor).
            Those stored at or after the final iteration (CG stopped on the device before the host learned
            it) repeat the final iterate.
    """

    iterations: Tensor
    iterates: list[tuple[int | Tensor, Tensor, Tensor]]


def conjugate_gradient(matvec: MatVec, b: Tensor, x0: Tensor, max_iter: int, min_window: int,
                       progress_tol: float, store_ratio: float, check_every: int | None = None
                       ) -> ConjugateGradientResult:
    """Minimise phi(p) = 1/2 p^T A p - b^T p (solve A p = b) by conjugate gradient.

    Stops after `max_iter` iterations, on a direction of non-positive curvature, or by
    Martens' relative-progress test (2010, sec. 4.4): with k = max(min_window, ceil(0.1 i)),
    stop once phi_i < 0 and (phi_i - phi_{i-k}) / phi_i < k * progress_tol.
    Iterates are stored at iterations ceil(store_ratio^j) (Martens 2010, sec. 4.6) and at the end.
    The tests run on the device (phi in float64, as the host would compare it) and freeze the iterate
    once they stop it; the host loop ends once it learns so (`StopFlag`, every `check_every` iterations,
    never waiting for a GPU).

    Args:
        matvec: p -> A p on flat vectors.
        b: right-hand side (N,).
        x0: initial guess (N,).
        max_iter: iteration cap.
        min_window: smallest progress window k (CG runs at least this many iterations).
        progress_tol: relative progress per iteration below which CG stops.
        store_ratio: growth factor of the storage grid (> 1).
        check_every: iterations between posts of the stop flag (None: `StopFlag`'s default).
    """
    x = x0.clone()
    residual = b - matvec(x)
    direction = residual.clone()
    residual_sq = residual.dot(residual)
    objective = [(-0.5 * x.dot(b + residual)).double()]
    running = torch.ones((), dtype=torch.bool, device=b.device)
    done = torch.zeros((), dtype=torch.int64, device=b.device)
    iterates = []
    next_store, store_power = 1, 0
    stop = StopFlag(b.device, check_every)
    for iteration in range(1, max_iter + 1):
        a_direction = matvec(direction)
        curvature = direction.dot(a_direction)
        running = running & (curvature > 0)
        alpha = residual_sq / curvature
        x = torch.where(running, x + alpha * direction, x)
        residual = torch.where(running, residual - alpha * a_direction, residual)
        objective.append(torch.where(running, (-0.5 * x.dot(b + residual)).double(), objective[-1]))
        done = done + running.long()
        if iteration == next_store:
            iterates.append((iteration, x.clone(), objective[-1]))
            while next_store <= iteration:
                store_power += 1
                next_store = math.ceil(store_ratio ** store_power)
        window = max(min_window, math.ceil(0.1 * iteration))
        if iteration >= window:
            phi = objective[-1]
            running = running & ~((phi < 0) & ((phi - objective[-1 - window]) / phi < window * progress_tol))
        new_residual_sq = residual.dot(residual)
        direction = torch.where(running, residual + (new_residual_sq / residual_sq) * direction, direction)
        residual_sq = torch.where(running, new_residual_sq, residual_sq)
        if stop.should_stop(iteration, lambda: ~running):
            break
    iterates.append((done, x, objective[-1]))
    return ConjugateGradientResult(done, iterates)


def levenberg_marquardt_damping(damping: Tensor | float, rho: Tensor | float) -> Tensor | float:
    """Martens' (2010, sec. 4.1) damping rule: x 3/2 if rho < 1/4 (NaN included), x 2/3 if rho > 3/4;
    in float64, decided on rho's device (a float if both are floats)."""
    rho_t = torch.as_tensor(rho, dtype=torch.float64)
    damping_t = damping if isinstance(damping, Tensor) else torch.full_like(rho_t, damping)
    new = torch.where(~(rho_t >= 0.25), damping_t * 1.5, torch.where(rho_t > 0.75, damping_t * 2.0 / 3.0, damping_t))
    return new if isinstance(rho, Tensor) or isinstance(damping, Tensor) else new.item()


class HessianFree(torch.optim.Optimizer):
    """Hessian-free optimiser (truncated Newton with CG, backtracking and adaptive damping).

    G is positive semi-definite when L is convex in x (linear physics with an L2 loss); for
    non-convex L, and for curvature="hessian", CG stops at the first direction of non-positive
    curvature and the damping grows until the model is trusted again. rho compares the loss
    change with the undamped model change q(p) - q(0) = g^T p + 1/2 p^T B p.

    One parameter group only: the whole parameter vector is one Newton system. State that a
    resume needs lives in the state dict: lambda in `param_groups[0]["damping"]` (a float there; in
    training a float64 tensor on the device from the first step on), the CG warm start and the step
    count per parameter in `state[p]`. After each step, `step_stats` holds the step's diagnostics
    (float64 tensors on the device; `last_stats` reads them as floats): loss, loss_after, damping
    (lambda used by this step's CG), rho, cg_iters, cg_iter_chosen, step_size. Every decision (CG's
    stopping, backtracking, line search, lambda) is made on the device; the host only learns every
    `check_every` trials whether a loop may end early, so a step never waits for a GPU.

    Example:
        def forward():
            x = net(y_target)
            return 0.5 * ((physics(x) - y_target) ** 2).sum(), x
        loss = optimizer.step(forward)
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 1.0,
                 damping: float = 1.0, curvature: str = "ggn", cg_max_iter: int = 250,
                 cg_min_iter: int = 10, cg_decay: float = 0.95, cg_tol: float = 5e-4,
                 cg_store_ratio: float = 1.3, armijo_c: float = 1e-2,
                 armijo_shrink: float = 0.8, armijo_max_iter: int = 20, check_every: int | None = None) -> None:
        """
        Args:
            params: parameters to optimise (a single group).
            lr: first step size tried by the Armijo line search.
            damping: initial Tikhonov damping lambda.
            curvature: "ggn" (generalised Gauss-Newton, needs the output x) or "hessian".
            cg_max_iter: CG iteration cap (250 as in Martens & Sutskever 2012, sec. 8.7).
            cg_min_iter: smallest window k of the CG progress test.
            cg_decay: CG warm start = cg_decay * previous step's last CG iterate.
            cg_tol: relative-progress tolerance of the CG stopping test (5e-4).
            cg_store_ratio: CG iterates kept for backtracking at iterations ceil(ratio^j).
            armijo_c: sufficient-decrease constant c of f(theta + a p) <= f + c a g^T p.
            armijo_shrink: step size factor per rejected line-search trial.
            armijo_max_iter: line-search trials before the step is rejected (step size 0).
            check_every: CG iterations, backtracking and line-search trials between the host's looks at
                whether they are done (`StopFlag`; None: its default); the result is the same for any value.
        """
        values.choice("optimizer.optimizer.curvature", curvature, CURVATURES)
        values.number("optimizer.lr", lr)
        values.number("optimizer.optimizer.damping", damping, "[0, inf)")
        values.integer("optimizer.optimizer.cg_max_iter", cg_max_iter)
        values.number("optimizer.optimizer.cg_decay", cg_decay, "[0, 1]")
        defaults = dict(lr=lr, damping=damping, curvature=curvature, cg_max_iter=cg_max_iter,
                        cg_min_iter=cg_min_iter, cg_decay=cg_decay, cg_tol=cg_tol,
                        cg_store_ratio=cg_store_ratio, armijo_c=armijo_c,
                        armijo_shrink=armijo_shrink, armijo_max_iter=armijo_max_iter)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("HessianFree supports a single parameter group")
        self.check_every = check_every
        self.step_stats: dict[str, Tensor] = {}

    @property
    def last_stats(self) -> dict[str, float]:
        """The last step's diagnostics as floats (reading them waits for the device)."""
        return {name: float(value) for name, value in self.step_stats.items()}

    def state_dict(self) -> dict:
        """The optimizer's state, lambda as a float (read from the device when a checkpoint is written)."""
        state = super().state_dict()
        group = state["param_groups"][0]
        group["damping"] = float(group["damping"])
        return state

    def _params(self) -> list[Tensor]:
        return [p for p in self.param_groups[0]["params"] if p.requires_grad]

    def _warm_start(self, params: list[Tensor]) -> Tensor:
        return _flat(self.state[p].get("cg_warm_start", torch.zeros_like(p)) for p in params)

    def _record_step(self, params: list[Tensor], last_iterate: Tensor, decay: float) -> None:
        """Keep the decayed last CG iterate (not the backtracked one, Martens 2010 sec. 4.6)."""
        for p, chunk in zip(params, _split(decay * last_iterate, params)):
            state = self.state[p]
            state["cg_warm_start"] = chunk.clone()
            state["step"] = state.get("step", 0) + 1

    def _curvature_product(self, loss: Tensor, output: Tensor | None, params: list[Tensor]) -> MatVec:
        if self.param_groups[0]["curvature"] == "hessian":
            return hessian_product(loss, params)
        if output is None:
            raise ValueError("curvature='ggn' needs forward() to return the network output")
        return gauss_newton_product(loss, output, params)

    def step(self, closure: Forward) -> Tensor:  # type: ignore[override]
        """One Hessian-free step, decided on the device: the host never waits for it.

        Args:
            closure: forward() -> (loss, output): re-runs network and physics with a graph and
                returns the scalar loss and the network output x (the Gauss-Newton split point;
                may be None for curvature="hessian"). Called once with a graph and a few more
                times without (backtracking and line search). Named `closure` so that
                Lightning's `optimizer.step(closure=...)` passes it through.

        Returns:
            The loss before the update (detached).
        """
        group = self.param_groups[0]
        params = self._params()
        with torch.enable_grad():
            loss, output = closure()
            gradient = _flat(_vjp([loss], params, [torch.ones_like(loss)])).detach()
            damping = group["damping"]
            if isinstance(damping, Tensor):  # lambda lives on the device from the first step on
                damping = damping.to(gradient.device)
            else:
                damping = torch.full((), damping, dtype=torch.float64, device=gradient.device)
            curvature = self._curvature_product(loss, output, params)
            cg = conjugate_gradient(lambda v: curvature(v) + damping * v, -gradient,
                                    self._warm_start(params), group["cg_max_iter"], group["cg_min_iter"],
                                    group["cg_tol"], group["cg_store_ratio"], self.check_every)
        del curvature, output
        loss = loss.detach()
        loss_before = loss.double()
        self._record_step(params, cg.iterates[-1][1], group["cg_decay"])

        start = _flat(params).detach().clone()

        def loss_at(delta: Tensor) -> Tensor:
            self._assign(params, start + delta)
            with torch.no_grad():
                return closure()[0].double()

        iteration, direction, phi, loss_chosen = self._backtrack(cg, loss_at)
        predicted = phi - 0.5 * damping * direction.dot(direction).double()  # undamped q(p) - q(0)
        rho = torch.where(predicted < 0, (loss_chosen - loss_before) / predicted, -math.inf)
        group["damping"] = levenberg_marquardt_damping(damping, rho)

        step_size, loss_after = self._armijo(
            lambda a: loss_chosen if a == 1.0 else loss_at(a * direction),
            loss_before, gradient.dot(direction).double(), group)
        self._assign(params, start + step_size * direction)
        self.step_stats = dict(loss=loss_before, loss_after=loss_after, damping=damping, rho=rho,
                               cg_iters=cg.iterations.double(), cg_iter_chosen=iteration.double(),
                               step_size=step_size)
        return loss

    @staticmethod
    def _assign(params: list[Tensor], vector: Tensor) -> None:
        with torch.no_grad():
            for p, chunk in zip(params, _split(vector, params)):
                p.copy_(chunk)

    def _backtrack(self, cg: ConjugateGradientResult, loss_at: Callable[[Tensor], Tensor]
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Martens (2010, sec. 4.6): walk back from the final CG iterate over the stored ones while the loss
        falls (those that repeat the final iterate are passed over).

        Returns:
            The best iterate seen: its CG iteration, the iterate, its phi and its loss.
        """
        final_iteration, best, best_phi = cg.iterates[-1]
        best_iteration, best_loss = final_iteration.clone(), loss_at(best)
        walking = torch.ones_like(final_iteration, dtype=torch.bool)
        stop = StopFlag(best.device, self.check_every)
        for count, (iteration, candidate, phi) in enumerate(reversed(cg.iterates[:-1]), start=1):
            earlier = iteration < final_iteration
            candidate_loss = loss_at(candidate)
            better = walking & earlier & (candidate_loss < best_loss)
            walking = walking & (~earlier | better)
            best_iteration = torch.where(better, iteration, best_iteration)
            best = torch.where(better, candidate, best)
            best_phi = torch.where(better, phi, best_phi)
            best_loss = torch.where(better, candidate_loss, best_loss)
            if stop.should_stop(count, lambda: ~walking):
                break
        return best_iteration, best, best_phi, best_loss

    def _armijo(self, loss_at_step_size: Callable[[float], Tensor], loss: Tensor, slope: Tensor,
                group: dict) -> tuple[Tensor, Tensor]:
        """Largest a = lr * shrink^n with f(theta + a p) <= f + c a g^T p (M&S 2012, sec. 8.8).

        Returns:
            (a, f(theta + a p)), or (0, f) when no trial satisfies the condition.
        """
        step_size = group["lr"]
        chosen, loss_after = torch.zeros_like(loss), loss
        searching = torch.ones_like(loss, dtype=torch.bool)
        stop = StopFlag(loss.device, self.check_every)
        for trial_index in range(group["armijo_max_iter"]):
            trial = loss_at_step_size(step_size)
            accept = searching & (trial <= loss + group["armijo_c"] * step_size * slope)
            chosen = torch.where(accept, step_size, chosen)
            loss_after = torch.where(accept, trial, loss_after)
            searching = searching & ~accept
            if stop.should_stop(trial_index + 1, lambda: ~searching):
                break
            step_size *= group["armijo_shrink"]
        return chosen, loss_after


def batch_statistics(network: nn.Module, inputs: Tensor) -> None:
    """Set the running statistics of every batch norm of `network` to those of `inputs` (as
    torch.optim.swa_utils.update_bn does for one batch, with momentum 1 instead of its cumulative average,
    which reads the batch count from the device)."""
    norms = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta, was_training = [m.momentum for m in norms], network.training
    for module in norms:
        module.reset_running_stats()
        module.momentum = 1.0
    network.train()
    network(inputs)
    for module, momentum in zip(norms, momenta):
        module.momentum = momentum
    network.train(was_training)


class HessianFreeRule(PhysicsGradient):
    """Train on the physics loss with `HessianFree`, the Gauss-Newton split at the prediction x.

    Curvature products use G = J^T (d2L/dx2) J with J = dx/dtheta and x = NN(y*) after the
    problem's `prepare_prediction`, so G is positive semi-definite wherever L is convex in x
    (every linear physics). The step runs through Lightning's optimizer, so the step counter
    advances and lambda and the CG warm start are saved in, and restored from, checkpoints.
    Logged per step: damping (the lambda of this step's CG), cg_iterations, reduction_ratio
    (rho) and step_size (0 when the line search rejected the step). Batch-norm running
    statistics are those of the step's batch at the new weights (one extra forward pass).

    Args:
        optimizer: a `HessianFree` partial holding its settings (curvature, damping, CG).
        lr: first step size of the Armijo line search.
    """

    needs_double_backward = True  # curvature products
    needs_full_precision = True  # CG on curvature products
    single_process = True  # nothing averages its gradients, curvature products and line search across processes

    def __init__(self, optimizer: Callable[..., HessianFree], lr: float) -> None:
        super().__init__(optimizer, lr)
        self.make_optimizer([torch.zeros(1, requires_grad=True)])  # bad settings fail at start-up, not in fit

    def training_step(self, step: StepInterface, y_target: torch.Tensor, *observed: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        optimizer = step.optimizer()
        result: dict[str, torch.Tensor] = {}

        def closure() -> tuple[Tensor, Tensor]:
            x = step.predict(y_target)
            per_example, y = self.objective(step.problem, x, y_target, *observed)
            loss = step.problem.reduce(per_example)
            if not result:  # the first call, with a graph, at the parameters before the step
                result.update(loss=loss.detach(), x=x.detach(), y=y)
            return loss, x

        optimizer.step(closure=closure)
        # Batch-norm running averages (momentum 0.1) lag far behind Hessian-free steps, and the line
        # search moved them at rejected trial weights: recompute them from this batch at the new weights.
        with torch.no_grad():
            batch_statistics(step.network, step.problem.network_input(y_target))
        stats = optimizer.step_stats
        result["stats"] = {name: stats[key].float() for name, key in (
            ("damping", "damping"), ("cg_iterations", "cg_iters"), ("reduction_ratio", "rho"),
            ("step_size", "step_size"))}
        return result
