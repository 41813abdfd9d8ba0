"""Incompressible, energy-preserving 2D Euler flow with a passive marker (SIP appendix B.4).

Geometry and conventions, shared by every function here:
- a square periodic domain of side `size` length units (128 in the paper) with N x N cells,
  cell size dx = size / N (2 at the paper's 64 x 64). The physical problem (box, vortex,
  noise scale, time) is fixed in length units, so other resolutions discretise the same problem;
- vector channels are (x, y): x runs along W (columns), y along H (rows); cell (j, i) covers
  [i dx, (i + 1) dx] x [j dx, (j + 1) dx];
- a centred field (..., C, H, W) is sampled at the cell centres ((i + 1/2) dx, (j + 1/2) dx);
- a staggered (MAC) velocity (..., 2, H, W) holds vx on the lower x-face of each cell,
  (i dx, (j + 1/2) dx), and vy on its lower y-face, ((i + 1/2) dx, j dx);
- markers are centred scalar fields (B, 1, H, W); trajectories stack time as dim 1.
"""
from __future__ import annotations

import math

import torch

from sip_train.physics import advect
from sip_train.physics.noise import smooth_noise

DOMAIN_SIZE = 128.0
DURATION = 2.0
STEPS = 8
VORTEX_SIGMA = 20.0
MARKER_BOX = 56.0  # side of the box holding the initial marker, in length units
NOISE_SCALE = 10.0  # size of the marker noise and of the velocity fluctuations, in length units
FLUCTUATION = 0.1
SIP_GAIN = 1e-3


# --- staggered grid -------------------------------------------------------------------------


def centered_to_staggered(velocity: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of a centred velocity (..., 2, H, W) to the faces.

    vx on x-face i (between cells i - 1 and i) = (vx[i - 1] + vx[i]) / 2, likewise vy along y.
    """
    vx, vy = velocity.unbind(dim=-3)
    return torch.stack([0.5 * (vx + vx.roll(1, -1)), 0.5 * (vy + vy.roll(1, -2))], dim=-3)


def staggered_to_centered(velocity: torch.Tensor) -> torch.Tensor:
    """Average of the two faces of each cell, (..., 2, H, W) staggered -> centred."""
    vx, vy = velocity.unbind(dim=-3)
    return torch.stack([0.5 * (vx + vx.roll(-1, -1)), 0.5 * (vy + vy.roll(-1, -2))], dim=-3)


def velocity_at_faces(velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The velocity components at the faces of both staggered components.

    The normal component is the stored one; the tangential one is the mean of the four
    surrounding faces of the other orientation (bilinear interpolation at the face centre).

    Args:
        velocity: staggered velocity (B, 2, H, W).

    Returns:
        vx and vy, each (B, 2, H, W) with channel 0 at the x-faces and channel 1 at the y-faces.
    """
    vx, vy = velocity.unbind(dim=1)
    vy_between_rows = 0.5 * (vy + vy.roll(-1, -2))
    vx_between_columns = 0.5 * (vx + vx.roll(-1, -1))
    vy_at_x_faces = 0.5 * (vy_between_rows + vy_between_rows.roll(1, -1))
    vx_at_y_faces = 0.5 * (vx_between_columns + vx_between_columns.roll(1, -2))
    return torch.stack([vx, vx_at_y_faces], dim=1), torch.stack([vy_at_x_faces, vy], dim=1)


def divergence(velocity: torch.Tensor, dx: float) -> torch.Tensor:
    """Cell divergence (vx[i+1] - vx[i] + vy[j+1] - vy[j]) / dx of a staggered (..., 2, H, W) -> (..., H, W)."""
    vx, vy = velocity.unbind(dim=-3)
    return (vx.roll(-1, -1) - vx + vy.roll(-1, -2) - vy) / dx


def make_incompressible(velocity: torch.Tensor) -> torch.Tensor:
    """Pressure projection v - grad p with lap p = div v, solved exactly in Fourier space.

    On a periodic grid the staggered divergence of the staggered pressure gradient is the
    5-point Laplacian, diagonal in Fourier space with eigenvalues 2 cos(k_x) + 2 cos(k_y) - 4
    (k in radians per cell), so one FFT pair solves the Poisson equation. The cell size
    cancels. The result has zero staggered divergence to round-off.

    Args:
        velocity: staggered velocity (..., 2, H, W).

    Returns:
        The divergence-free staggered velocity (..., 2, H, W).
    """
    height, width = velocity.shape[-2:]
    options = dict(dtype=velocity.dtype, device=velocity.device)
    k_y = 2 * math.pi * torch.fft.fftfreq(height, **options)
    k_x = 2 * math.pi * torch.fft.rfftfreq(width, **options)
    laplace_eigenvalues = 2 * torch.cos(k_y)[:, None] + 2 * torch.cos(k_x)[None, :] - 4
    laplace_eigenvalues[0, 0] = math.inf  # the mean pressure is free: set it to zero
    pressure = torch.fft.irfft2(torch.fft.rfft2(divergence(velocity, 1.0)) / laplace_eigenvalues, s=(height, width))
    pressure_gradient = torch.stack([pressure - pressure.roll(1, -1), pressure - pressure.roll(1, -2)], dim=-3)
    return velocity - pressure_gradient


# --- time stepping --------------------------------------------------------------------------


def energy(velocity: torch.Tensor) -> torch.Tensor:
    """Kinetic energy per example as the mean of v^2 over all faces, (B, 2, H, W) -> (B,)."""
    return (velocity**2).mean(dim=(-3, -2, -1))


def rescale_energy(velocity: torch.Tensor, target_energy: torch.Tensor) -> torch.Tensor:
    """v * sqrt(E_target / E(v)) per example; a velocity with zero energy stays zero."""
    current = energy(velocity)
    moving = current > 0
    # Both branches of a where are differentiated: keep sqrt away from 0 on the unselected one.
    ratio = torch.where(moving, target_energy / torch.where(moving, current, torch.ones_like(current)),
                        torch.ones_like(current))
    factor = torch.where(moving, torch.sqrt(ratio), torch.zeros_like(ratio))
    return velocity * factor[:, None, None, None]


def step(velocity: torch.Tensor, marker: torch.Tensor, dt: float, dx: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of energy-preserving inviscid incompressible flow with passive marker transport.

    v <- MacCormack self-advection of v, then pressure projection, then rescaled to the energy
    it had before the step; the marker is then advected (MacCormack) by the new velocity.
    dt < 0 runs the flow backwards in time (the SIP reverse simulation).

    Args:
        velocity: divergence-free staggered velocity (B, 2, H, W), length units per time unit.
        marker: centred marker density (B, 1, H, W).
        dt: time step.
        dx: cell size in length units.

    Returns:
        The velocity and the marker after the step, same shapes.
    """
    initial_energy = energy(velocity)
    velocity = advect.mac_cormack(velocity, *velocity_at_faces(velocity), dt, dx)
    velocity = rescale_energy(make_incompressible(velocity), initial_energy)
    marker = advect.mac_cormack(marker, *staggered_to_centered(velocity).split(1, dim=1), dt, dx)
    return velocity, marker


def simulate(
    v0: torch.Tensor,
    m0: torch.Tensor,
    steps: int = STEPS,
    dt: float = DURATION / STEPS,
    size: float = DOMAIN_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward physics P: a centred initial velocity and marker to their trajectories.

    v0 is resampled to the staggered grid and made divergence-free, then `steps` calls of
    `step` follow. Differentiable end to end.

    Args:
        v0: centred initial velocity (B, 2, H, W), length units per time unit.
        m0: centred initial marker (B, 1, H, W).
        steps: number of time steps.
        dt: time step.
        size: side length of the square domain (cell size = size / W).

    Returns:
        velocities: staggered velocities (B, steps + 1, 2, H, W), frame 0 the projected v0.
        markers: markers (B, steps + 1, 1, H, W), frame 0 = m0.
    """
    dx = size / v0.shape[-1]
    velocity, marker = make_incompressible(centered_to_staggered(v0)), m0
    velocities, markers = [velocity], [marker]
    for _ in range(steps):
        velocity, marker = step(velocity, marker, dt, dx)
        velocities.append(velocity)
        markers.append(marker)
    return torch.stack(velocities, dim=1), torch.stack(markers, dim=1)


# --- geometry of the data -------------------------------------------------------------------


def cell_centers(resolution: int, size: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Positions (x, y) of the cell centres, (2, N, N), in length units."""
    coordinates = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) * (size / resolution)
    y, x = torch.meshgrid(coordinates, coordinates, indexing="ij")
    return torch.stack([x, y])


def center_of_mass(marker: torch.Tensor, size: float = DOMAIN_SIZE) -> torch.Tensor:
    """sum(m p) / sum(m) over the cell centres p (not wrapped periodically), (B, 1, H, W) -> (B, 2)."""
    points = cell_centers(marker.shape[-1], size, marker.dtype, marker.device)
    return (marker * points).sum(dim=(-2, -1)) / marker.sum(dim=(-3, -2, -1))[:, None]


def cross(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """2D cross product a_x b_y - a_y b_x along `dim`."""
    a_x, a_y = a.unbind(dim)
    b_x, b_y = b.unbind(dim)
    return a_x * b_y - a_y * b_x


def vortex(
    strength: torch.Tensor, resolution: int, size: float = DOMAIN_SIZE, sigma: float = VORTEX_SIGMA
) -> torch.Tensor:
    """Gaussian vortex at the domain centre: v(p) = s exp(-|d|^2 / (2 sigma^2)) (-d_y, d_x), d = p - centre.

    PhiFlow's `AngularVelocity` with a Gaussian falloff, sampled at the cell centres;
    s > 0 turns counter-clockwise. strength (B,) -> centred velocity (B, 2, N, N).
    """
    offset = cell_centers(resolution, size, strength.dtype, strength.device) - size / 2
    falloff = torch.exp(-0.5 * (offset**2).sum(dim=0) / sigma**2)
    return strength[:, None, None, None] * falloff * torch.stack([-offset[1], offset[0]])


def vortex_strength(velocity: torch.Tensor, size: float = DOMAIN_SIZE, sigma: float = VORTEX_SIGMA) -> torch.Tensor:
    """Strength of the central vortex read off a centred velocity, (B, 2, N, N) -> (B,).

    mean(d x v) / mean(exp(-|d|^2 / (2 sigma^2)) |d|^2) over the cells, d = p - centre: exact
    for `vortex`, blind to any uniform velocity (the cell centres are symmetric about the
    centre). The denominator is 120.5 at 64 x 64, the constant of the authors' script.
    """
    offset = cell_centers(velocity.shape[-1], size, velocity.dtype, velocity.device) - size / 2
    squared_distance = (offset**2).sum(dim=0)
    normalisation = (torch.exp(-0.5 * squared_distance / sigma**2) * squared_distance).mean()
    return cross(offset, velocity, dim=-3).mean(dim=(-2, -1)) / normalisation


def box_fraction(lower: torch.Tensor, upper: torch.Tensor, resolution: int, size: float) -> torch.Tensor:
    """Fraction of each cell inside the axis-aligned box [lower, upper], (B, 2) -> (B, 1, N, N)."""
    dx = size / resolution
    edges = torch.arange(resolution, dtype=lower.dtype, device=lower.device) * dx
    overlap = (torch.minimum(edges + dx, upper[..., None]) - torch.maximum(edges, lower[..., None])).clamp(0, dx) / dx
    return (overlap[:, 1, :, None] * overlap[:, 0, None, :]).unsqueeze(1)


# --- data -----------------------------------------------------------------------------------


def _random_marker(
    n: int, generator: torch.Generator, resolution: int, size: float, dtype: torch.dtype
) -> torch.Tensor:
    """Thresholded noise in a box of side 56 (length units) at a random position, (n, 1, N, N).

    The box centre is uniform in the central half of the domain. As PhiFlow's `discretize`,
    the marked cells are the highest noise values, a fraction U(5 %, 15 %) of the whole grid,
    limited to positive noise inside the box (cells cut by the box edge keep their fraction).
    """
    options = dict(generator=generator, device=generator.device, dtype=dtype)
    center = torch.rand(n, 2, **options) * (size / 2) + size / 4
    box = box_fraction(center - MARKER_BOX / 2, center + MARKER_BOX / 2, resolution, size)
    noise_scale = NOISE_SCALE * resolution / size  # in cells
    noise = smooth_noise(n, (resolution, resolution), generator, scale=noise_scale, dtype=dtype).unsqueeze(1) * box
    fill_fraction = torch.rand(n, **options) * 0.1 + 0.05
    filled_cells = torch.round(fill_fraction * resolution**2).long().clamp_min(1)
    ranked = noise.flatten(1).sort(dim=1, descending=True).values
    threshold = ranked.gather(1, filled_cells[:, None] - 1)[:, :, None, None]
    return box * ((noise >= threshold) & (noise > 0)).to(dtype)


@torch.no_grad()
def sample(
    n: int,
    generator: torch.Generator,
    resolution: int = 64,
    size: float = DOMAIN_SIZE,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random examples of the fluid problem, created on `generator.device`.

    m0: `_random_marker`. v0 = uniform velocity carrying the marker's centre of mass to the
    domain centre in time 2, plus a central Gaussian vortex (strength U(-2, 2), sigma 20),
    plus smooth noise fluctuations (scale 10, amplitude 0.1 per component). mt: the marker
    simulated from (v0, m0) to t = 2.

    Args:
        n: number of examples.
        generator: random source.
        resolution: cells per axis N (divisible by 4).
        size: domain side in length units.
        dtype: real dtype.

    Returns:
        v0 (n, 2, N, N) centred, m0 (n, 1, N, N), mt (n, 1, N, N).
    """
    m0 = _random_marker(n, generator, resolution, size, dtype)
    uniform_velocity = (size / 2 - center_of_mass(m0, size)) / DURATION
    strength = (torch.rand(n, generator=generator, device=generator.device, dtype=dtype) - 0.5) * 4
    noise_scale = NOISE_SCALE * resolution / size  # in cells
    fluctuations = smooth_noise(2 * n, (resolution, resolution), generator, scale=noise_scale, dtype=dtype)
    v0 = (
        uniform_velocity[:, :, None, None]
        + vortex(strength, resolution, size)
        + FLUCTUATION * fluctuations.view(n, 2, resolution, resolution)
    )
    mt = simulate(v0, m0, size=size)[1][:, -1]
    return v0, m0, mt


# --- objective, inverse estimate and metrics ------------------------------------------------


def fourier_weighted_loss(
    marker: torch.Tensor, target: torch.Tensor, falloff: float = 1.25, threshold: float = 1e-5
) -> torch.Tensor:
    """Fourier-weighted L1 marker difference, per example, (B, 1, H, W) x2 -> (B,).

    sum_k sqrt(max(|F(d)_k w_k|^2, threshold)) with d the mean-free difference, F the
    unnormalised 2D FFT and w_k = exp(-(falloff |k|)^2 / 2), k the integer wave number.
    Equals PhiFlow's `frequency_loss(d, n=1, frequency_falloff=falloff * N, ignore_mean=True)`,
    the authors' loss with frequency_falloff 80 at N = 64. The threshold adds a constant floor of
    sqrt(threshold) per frequency that carries no gradient.
    """
    difference = marker - target
    difference = difference - difference.mean(dim=(-2, -1), keepdim=True)
    height, width = difference.shape[-2:]
    options = dict(dtype=difference.dtype, device=difference.device)
    k_y = torch.fft.fftfreq(height, **options) * height
    k_x = torch.fft.fftfreq(width, **options) * width
    weight = torch.exp(-0.5 * falloff**2 * (k_y[:, None] ** 2 + k_x[None, :] ** 2))
    spectrum = torch.fft.fft2(difference) * weight
    amplitude = torch.sqrt((spectrum.real**2 + spectrum.imag**2).clamp_min(threshold))
    return amplitude.flatten(1).sum(dim=1)


@torch.no_grad()
def sip_estimate(
    v0: torch.Tensor,
    m0: torch.Tensor,
    mt: torch.Tensor,
    steps: int = STEPS,
    dt: float = DURATION / STEPS,
    size: float = DOMAIN_SIZE,
    gain: float = SIP_GAIN,
    trajectory: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Reverse-simulation estimate v~0 of the initial velocity (the fluid SIP update x~ = x + U(x)).

    v~0 = u + vortex(s), u = (centre - com(m0)) / t the uniform velocity that carries the
    marker to the domain centre, s = vortex_strength(v0) + gain * mean_k c_k over the frames
    k = 0..steps. A forward simulation from (v0, m0) gives centres of mass f_k; a reverse
    simulation (dt -> -dt) from (v_t, m_t) gives r_k; with p_k the assumed vortex position,
    c_k = (f_k - r_k) x (r_k - p_k) > 0 where the forward marker lags the target's rotation
    counter-clockwise. Small-scale velocity fluctuations are not estimated.

    As in the authors' script, p_k = centre + u * k for k < steps (frame index, where the
    vortex drifting with u would be at centre + u * k dt) and centre + u * t at the last frame.
    Kept for fidelity: it lengthens the lever arms of the intermediate frames, which makes the
    correction about twice as large (measured here: the vortex-strength error of repeated
    estimates shrinks by ~25 % per call versus ~14 % with the drifting position).

    Args:
        v0: current centred estimate (B, 2, N, N).
        m0, mt: observed markers (B, 1, N, N) at t = 0 and t = steps * dt.
        steps, dt, size: as `simulate`.
        gain: step size of the vortex-strength correction (1e-3 in the paper's scripts).
        trajectory: `simulate(v0, m0, steps, dt, size)` if already computed.

    Returns:
        v~0, centred (B, 2, N, N), without gradient.
    """
    batch, resolution = v0.shape[0], v0.shape[-1]
    velocities, markers = trajectory if trajectory is not None else simulate(v0, m0, steps, dt, size)
    velocity, marker = velocities[:, -1], mt
    reverse = [marker]
    for _ in range(steps):
        velocity, marker = step(velocity, marker, -dt, size / resolution)
        reverse.append(marker)
    forward_com = center_of_mass(markers.flatten(0, 1), size).view(batch, steps + 1, 2)
    reverse_com = center_of_mass(torch.stack(reverse[::-1], dim=1).flatten(0, 1), size).view(batch, steps + 1, 2)
    uniform_velocity = (size / 2 - forward_com[:, 0]) / (steps * dt)
    drift_factor = torch.arange(steps + 1, dtype=v0.dtype, device=v0.device)
    drift_factor[-1] = steps * dt
    vortex_path = size / 2 + uniform_velocity[:, None, :] * drift_factor[None, :, None]
    mismatch = cross(forward_com - reverse_com, reverse_com - vortex_path).mean(dim=1)
    strength = vortex_strength(v0, size) + gain * mismatch
    return uniform_velocity[:, :, None, None] + vortex(strength, resolution, size)


def gt_v0_l1(v0: torch.Tensor, v0_true: torch.Tensor) -> torch.Tensor:
    """sum over cells of |v0 - v0*| (Euclidean length per cell), centred (B, 2, H, W) -> (B,)."""
    return torch.linalg.vector_norm(v0 - v0_true, dim=1).sum(dim=(-2, -1))


def velocity_trajectory_l1(velocities: torch.Tensor, velocities_true: torch.Tensor) -> torch.Tensor:
    """sum over frames and cells of |v - v*| at the cell centres, staggered (B, T, 2, H, W) -> (B,)."""
    difference = staggered_to_centered(velocities - velocities_true)
    return torch.linalg.vector_norm(difference, dim=2).sum(dim=(1, 2, 3))
