"""Per-example damped Gauss-Newton (Levenberg-Marquardt) on L_i(x) = y_loss(P(x), y*_i)."""
from __future__ import annotations

import torch

from sip_train.inverse.base import InverseSolver, example_point, positive_float, positive_int
from sip_train.inverse.cg import batch_dot, conjugate_gradient, per_example
from sip_train.inverse.linearization import JACOBIAN_MODES, Linearization, prefers_forward_mode
from sip_train.problems.base import InverseProblem, Observed


class GaussNewton(InverseSolver):
    """dx solves (J^T H J + lambda_i I) dx = -J^T g per example, with J = dP/dx on the unknowns,
    g = d y_loss / dy and H its Hessian in y (I for the plain L2 loss).

    Matrix-free by batched CG (per-example step sizes and stopping) where the unknowns are many;
    a dense per-example Jacobian and an exact damped solve where they are few (sine, exp,
    wavepacket). lambda_i = damping_i * c_i, with c_i the curvature of J^T H J along the gradient
    (dense: its mean diagonal), so `damping` is relative and does not depend on the units of x.
    Each outer iteration takes the step where it lowers L_i and adapts damping_i from the gain
    ratio rho_i = actual / predicted decrease (Nielsen's rule); a rejected step raises it tenfold, to
    at least 1e-3 (Marquardt), so an example whose steps are all rejected gets dx = 0 from this update.
    The default damping is tiny: ill-conditioned problems (the sine at xi = 100, curvatures 1e8 apart)
    need their weak directions undamped; CG's iteration budget regularises the matrix-free path.

    Args:
        iterations: CG budget (matrix-vector products J^T H J v) per outer iteration.
        outer_iterations: Gauss-Newton steps per SIP update (each one more linearisation).
        damping: initial relative damping (0: plain Gauss-Newton).
        rel_tol: CG stops an example at ||residual|| <= rel_tol ||J^T g||.
        dense_max_unknowns: use the dense path up to this many unknowns per example (the size of x).
        jacobian: how J v is computed: "forward" (torch.func.jvp), "reverse" (double vjp) or
            "auto" (the double vjp where simulate's backward is differentiable, else forward mode;
            detected once).
        check_every: CG iterations between host reads of the convergence flags.
    """

    name = "gauss_newton"
    differentiates_physics_twice = True  # J v by a double vjp or forward mode through simulate

    def __init__(self, iterations: int = 20, outer_iterations: int = 2, damping: float = 1e-6, rel_tol: float = 1e-4,
                 dense_max_unknowns: int = 16, jacobian: str = "auto", check_every: int = 10) -> None:
        if jacobian not in JACOBIAN_MODES:
            raise ValueError(f"inverse.jacobian={jacobian!r} is invalid: choose one of {list(JACOBIAN_MODES)}")
        self.iterations = positive_int("iterations", iterations)
        self.outer_iterations = positive_int("outer_iterations", outer_iterations)
        self.damping = positive_float("damping", damping, allow_zero=True)
        self.rel_tol = positive_float("rel_tol", rel_tol, allow_zero=True)
        if isinstance(dense_max_unknowns, bool) or not isinstance(dense_max_unknowns, int) or dense_max_unknowns < 0:
            raise ValueError(f"inverse.dense_max_unknowns={dense_max_unknowns!r} is invalid: must be an integer >= 0")
        self.dense_max_unknowns = dense_max_unknowns
        self.jacobian = jacobian
        self.check_every = positive_int("check_every", check_every)
        self._forward_mode: bool | None = None if jacobian == "auto" else jacobian == "forward"
        self.last_cg_iterations: torch.Tensor | None = None  # per example, of the last outer iteration (diagnostics)

    def check(self, problem: InverseProblem) -> None:
        """Also fail at start-up if neither forward mode nor the double vjp gives J v (a simulator
        whose backward pass is not itself differentiable); decides the mode of J v once."""
        super().check(problem)
        x, y_target, observed = example_point(problem)
        try:
            forward_mode = self.forward_mode(problem, x, y_target, observed)
            Linearization(problem, x, y_target, forward_mode, observed).jvp(torch.ones_like(x))
        except RuntimeError as error:
            raise ValueError(
                f"inverse={self.name} needs Jacobian-vector products of problem {type(problem).__name__}'s simulate() "
                f"({str(error).strip().splitlines()[0]}); use inverse=lbfgs or inverse=gradient_descent"
            ) from None

    def forward_mode(self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor,
                     observed: Observed = ()) -> bool:
        """Whether J v uses forward mode; decided at the first call in "auto" mode."""
        if self._forward_mode is None:
            self._forward_mode = prefers_forward_mode(problem, x[:1], y_target[:1], tuple(o[:1] for o in observed))
        return self._forward_mode

    def simulate_and_update(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        forward_mode = self.forward_mode(problem, x, y_target, observed)
        damping = torch.full((len(x),), self.damping, dtype=x.dtype, device=x.device)
        solve = self._dense_step if x[0].numel() <= self.dense_max_unknowns else self._cg_step
        estimate, y = x.detach(), None
        for _ in range(self.outer_iterations):
            linear = Linearization(problem, estimate, y_target, forward_mode, observed)
            y = linear.y.detach() if y is None else y
            step, predicted = solve(linear, damping)
            with torch.no_grad():
                trial = estimate + step
                actual = linear.loss - problem.y_loss(problem.simulate(trial, *observed), y_target)
            gain = actual / predicted.clamp_min(torch.finfo(x.dtype).tiny)
            accept = (actual > 0) & (predicted > 0) & torch.isfinite(actual)
            estimate = torch.where(per_example(accept, x), trial, estimate)
            shrink = (1 - (2 * gain - 1) ** 3).clamp(min=1 / 3)
            damping = torch.where(accept, damping * shrink, (10 * damping).clamp_min(1e-3))
        return y, estimate - x

    def _cg_step(self, linear: Linearization, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Matrix-free step and its predicted decrease -(g.dx + 1/2 dx.J^T H J dx), per example."""
        gradient = linear.gradient
        curvature = batch_dot(gradient, linear.gauss_newton_product(gradient)) / batch_dot(gradient, gradient).clamp_min(
            torch.finfo(gradient.dtype).tiny)
        lam = per_example(damping * curvature, gradient)

        def damped(v: torch.Tensor) -> torch.Tensor:
            return linear.gauss_newton_product(v) + lam * v

        step, self.last_cg_iterations = conjugate_gradient(damped, -gradient, self.iterations, self.rel_tol,
                                                           self.check_every)
        predicted = -(batch_dot(gradient, step) + 0.5 * batch_dot(step, linear.gauss_newton_product(step)))
        return step.detach(), predicted.detach()

    def _dense_step(self, linear: Linearization, damping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact damped solve with the per-example Jacobian, in float64."""
        x = linear.x.detach()
        jacobian = dense_jacobian(linear)
        curvature_columns = torch.stack(
            [linear.hvp(column.reshape(linear.y.shape)).flatten(1) for column in jacobian.unbind(2)], dim=2)
        normal = jacobian.transpose(1, 2).double() @ curvature_columns.double()  # J^T H J, (B, n, n)
        gradient = linear.gradient.flatten(1).double()
        scale = torch.diagonal(normal, dim1=1, dim2=2).mean(1)
        lam = (damping.double() * scale)[:, None, None] * torch.eye(gradient.shape[1], dtype=torch.float64,
                                                                      device=x.device)
        solution = torch.linalg.lstsq(normal + lam, -gradient[..., None]).solution[..., 0]
        predicted = -((gradient * solution).sum(1) + 0.5 * (solution * (normal @ solution[..., None])[..., 0]).sum(1))
        return solution.to(x.dtype).reshape(x.shape), predicted.to(x.dtype)


def dense_jacobian(linear: Linearization) -> torch.Tensor:
    """The per-example Jacobian of y in x, (B, y numel, x numel), one J e_k per component k of x for the
    whole batch at once."""
    x = linear.x.detach()
    basis = torch.eye(x[0].numel(), dtype=x.dtype, device=x.device)
    columns = [linear.jvp(e.expand(len(x), -1).reshape(x.shape)).flatten(1) for e in basis.unbind(0)]
    return torch.stack(columns, dim=2)
