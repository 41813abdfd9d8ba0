"""A bring-your-own-simulator problem: 2D viscous Burgers' flow written with PhiFlow's own API.

Find the initial velocity u0 (2, N, N) of a periodic flow from the velocity observed after
`steps` steps of u <- advect(diffuse(u)). The problem implements only `sample` and `simulate`;
there is no hand-written inverse, so `optimizer=sip` trains it with a generic inverse solver
(Gauss-Newton by default), which needs nothing but PhiFlow's torch backend being differentiable.

    python train.py --config-dir examples/phiflow_burgers problem=burgers optimizer=sip
"""
from __future__ import annotations

import torch
from phi.torch.flow import Box, CenteredGrid, advect, batch, channel, diffuse, extrapolation, math, spatial

from sip_train.physics.noise import smooth_noise
from sip_train.problems.base import InverseProblem


class Burgers(InverseProblem):
    """du/dt + (u . grad) u = viscosity lap(u) on a periodic N x N domain of unit cells, PhiFlow-simulated.

    Args:
        resolution: cells per axis.
        viscosity: kinematic viscosity (cells^2 per time unit).
        dt: time step; the flow runs `steps` steps (explicit diffusion, semi-Lagrangian advection).
        steps: number of time steps between u0 and the observation.
        noise_scale: size in cells of the smooth random initial velocities.
        amplitude: largest initial speed (cells per time unit) of the sampled flows.
        batch_reduction: "sum" or "mean" over the batch.
    """

    def __init__(self, resolution: int = 32, viscosity: float = 0.1, dt: float = 0.5, steps: int = 4,
                 noise_scale: float = 8.0, amplitude: float = 1.0, batch_reduction: str = "sum") -> None:
        super().__init__(batch_reduction)
        self.resolution, self.viscosity, self.dt, self.steps = resolution, viscosity, dt, steps
        self.noise_scale, self.amplitude = noise_scale, amplitude
        self.x_shape = self.y_shape = (2, resolution, resolution)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """u0: smooth random velocities scaled to `amplitude` per example; y* = the flow after `steps`."""
        u0 = smooth_noise(2 * n, (self.resolution,) * 2, generator, self.noise_scale).reshape(n, *self.x_shape)
        u0 = self.amplitude * u0 / u0.abs().amax(dim=(1, 2, 3), keepdim=True)
        return u0, self.simulate(u0)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 2, N, N) -> (B, 2, N, N): torch in, PhiFlow Fields in between, torch out."""
        values = math.tensor(x, batch("examples"), channel(vector="x,y"), spatial("y,x"))
        velocity = CenteredGrid(values, extrapolation.PERIODIC, x=self.resolution, y=self.resolution,
                                bounds=Box(x=self.resolution, y=self.resolution))
        for _ in range(self.steps):
            velocity = diffuse.explicit(velocity, self.viscosity, self.dt)
            velocity = advect.semi_lagrangian(velocity, velocity, self.dt)
        return velocity.values.native(["examples", "vector", "y", "x"])
