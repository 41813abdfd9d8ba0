"""The two-dimensional sine map of the characterisation experiment (paper appendix B.1).

Physics: u = D R_phi x with D = diag(gamma / xi, gamma * xi), and P(x) = (sin(u_1), u_2).
The conditioning factor xi stretches the solution set along one axis and compresses it
along the other; phi rotates it. Angles are in radians. Vectors are (B, 2).
"""
from __future__ import annotations

import functools
import math

import torch


def _rotation_and_scale(
    xi: float, phi: float, gamma: float, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """R_phi (2, 2) and the diagonal of D (2,), on the device and dtype of `like`."""
    return _cached_rotation_and_scale(float(xi), float(phi), float(gamma), like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _cached_rotation_and_scale(
    xi: float, phi: float, gamma: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Built once per setting and device: a tensor made from Python numbers on a GPU is a blocking copy,
    which a training step must not wait for. Made outside inference mode so autograd may use it later."""
    cos, sin = math.cos(phi), math.sin(phi)
    with torch.inference_mode(False):
        rotation = torch.tensor([[cos, -sin], [sin, cos]], dtype=dtype, device=device)
        scale = torch.tensor([gamma / xi, gamma * xi], dtype=dtype, device=device)
    return rotation, scale


def _to_physical(x: torch.Tensor, xi: float, phi: float, gamma: float) -> torch.Tensor:
    """u = D R_phi x for x of shape (B, 2)."""
    rotation, scale = _rotation_and_scale(xi, phi, gamma, x)
    return (x @ rotation.T) * scale


def forward(x: torch.Tensor, xi: float, phi: float, gamma: float = 10.0) -> torch.Tensor:
    """P(x) = (sin(u_1), u_2) with u = diag(gamma / xi, gamma * xi) R_phi x.

    Args:
        x: solution estimates, shape (B, 2).
        xi: conditioning factor (1 to 100 in the paper).
        phi: rotation angle in radians.
        gamma: global scale (10 in the paper).

    Returns:
        Observations y, shape (B, 2).
    """
    u = _to_physical(x, xi, phi, gamma)
    return torch.stack([torch.sin(u[:, 0]), u[:, 1]], dim=1)


def sample(
    n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Targets y* ~ U[-1, 1]^2 (every such target has solutions), shape (n, 2)."""
    return 2 * torch.rand(n, 2, generator=generator, device=generator.device, dtype=dtype) - 1


def nearest_solution(
    x: torch.Tensor, y_target: torch.Tensor, xi: float, phi: float, gamma: float = 10.0
) -> torch.Tensor:
    """The solution x* of P(x*) = y* closest to x in Euclidean distance.

    Solutions are the isolated points u*_1 in {arcsin(y*_1), pi - arcsin(y*_1)} + 2 pi n,
    u*_2 = y*_2, mapped back through x* = R_phi^T D^-1 u*. All of them share u*_2, so
    ||x - x*||^2 = ((xi / gamma) (u_1 - u*_1))^2 + const: the candidate nearest in u_1
    is also the nearest in x, despite the anisotropic scaling.

    Args:
        x: predictions, shape (B, 2).
        y_target: targets in [-1, 1]^2, shape (B, 2).
        xi, phi, gamma: as in `forward`.

    Returns:
        x*, shape (B, 2).
    """
    rotation, scale = _rotation_and_scale(xi, phi, gamma, x)
    u_1 = (x @ rotation.T)[:, 0] * scale[0]
    principal = torch.arcsin(y_target[:, 0].clamp(-1, 1))
    branches = torch.stack([principal, math.pi - principal], dim=1)
    periods = torch.round((u_1[:, None] - branches) / (2 * math.pi))
    candidates = branches + 2 * math.pi * periods
    best = (u_1[:, None] - candidates).abs().argmin(dim=1, keepdim=True)
    u_star = torch.stack([candidates.gather(1, best)[:, 0], y_target[:, 1]], dim=1)
    return (u_star / scale) @ rotation


def loss_gradient_hessian(
    x: torch.Tensor, y_target: torch.Tensor, xi: float, phi: float, gamma: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form gradient and Hessian of L(x) = 1/2 ||P(x) - y*||^2 per example.

    With A = D R_phi, r_1 = sin(u_1) - y*_1:
    g = A^T (r_1 cos(u_1), u_2 - y*_2) and H = A^T diag(cos^2(u_1) - r_1 sin(u_1), 1) A.

    Args:
        x: predictions, shape (B, 2).
        y_target: targets, shape (B, 2).
        xi, phi, gamma: as in `forward`.

    Returns:
        g of shape (B, 2) and H of shape (B, 2, 2).
    """
    rotation, scale = _rotation_and_scale(xi, phi, gamma, x)
    u = (x @ rotation.T) * scale
    sin, cos = torch.sin(u[:, 0]), torch.cos(u[:, 0])
    residual_1 = sin - y_target[:, 0]
    grad_u = torch.stack([residual_1 * cos, u[:, 1] - y_target[:, 1]], dim=1)
    curvature_u = torch.stack([cos**2 - residual_1 * sin, torch.ones_like(sin)], dim=1)
    gradient = (grad_u * scale) @ rotation
    hessian = torch.einsum("ki,bk,kj->bij", rotation, curvature_u * scale**2, rotation)
    return gradient, hessian


def saddle_free_newton(
    gradient: torch.Tensor, hessian: torch.Tensor, loss_change_limit: float | None = 0.2
) -> torch.Tensor:
    """Newton step flipped to descend along every Hessian eigenvector (appendix B.1).

    With H = V diag(S) V^T and g_e = V^T g, the Newton step in the eigenbasis is
    n_e = -g_e / S (0 where S = 0). Where S does not exceed the geometric mean
    |prod S|^(1/D), |n_e| is capped at |c / g_e| (0 where g_e = 0), so directions of low
    or negative curvature change the loss by about c at most. The sign is always that of
    -g_e, hence g . dx <= 0: maxima and saddles repel. dx = V n_e.

    Args:
        gradient: g, shape (B, D).
        hessian: symmetric H, shape (B, D, D).
        loss_change_limit: c; None takes |n_e| unlimited.

    Returns:
        dx, shape (B, D).
    """
    curvature, basis = torch.linalg.eigh(hessian)
    gradient_eig = torch.einsum("bij,bi->bj", basis, gradient)
    step = torch.where(curvature == 0, 0.0, gradient_eig / curvature).abs()
    if loss_change_limit is not None:
        mean_curvature = curvature.prod(dim=1, keepdim=True).abs() ** (1 / curvature.shape[1])
        gradient_limit = torch.where(gradient_eig == 0, 0.0, loss_change_limit / gradient_eig).abs()
        step = torch.where(curvature > mean_curvature, step, step.minimum(gradient_limit))
    return torch.einsum("bij,bj->bi", basis, -torch.sign(gradient_eig) * step)
