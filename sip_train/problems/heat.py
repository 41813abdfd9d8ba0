"""The heat equation (paper appendix B.3): recover an initial temperature x from its diffused state."""
from __future__ import annotations

import torch

from sip_train.physics import diffuse
from sip_train.problems.base import GridProblem


def hot_rectangles(
    n: int, resolution: int, generator: torch.Generator, max_rectangles: int = 10, min_rectangles: int = 4
) -> torch.Tensor:
    """Sums of min..max axis-aligned hot boxes with soft (cell-fraction) edges: (n, 1, N, N) float64.

    Each box: centre in the central 80% of the domain, half-size U[0, 10) cells per axis,
    strength U[0, 1), clipped to stay inside the domain, as the authors' `generate_heat_example`.
    """
    options = dict(generator=generator, device=generator.device, dtype=torch.float64)
    counts = (min_rectangles + (max_rectangles - min_rectangles + 1) * torch.rand(n, 1, **options)).floor()
    centres = (torch.rand(n, max_rectangles, 2, **options) - 0.5) * 0.8 * resolution + 0.5 * resolution
    half_sizes = torch.rand(n, max_rectangles, 2, **options) * 10
    strengths = torch.rand(n, max_rectangles, **options) * (torch.arange(max_rectangles, device=generator.device) < counts)
    centres = torch.maximum(torch.minimum(centres, resolution - half_sizes), half_sizes)
    cells = torch.arange(resolution, **{k: v for k, v in options.items() if k != "generator"}) + 0.5
    lower = (centres - half_sizes)[..., None]  # (n, boxes, axis, 1)
    upper = (centres + half_sizes)[..., None]
    coverage = (torch.minimum(cells + 0.5, upper) - torch.maximum(cells - 0.5, lower)).clamp(0, 1)
    boxes = coverage[:, :, 0, :, None] * coverage[:, :, 1, None, :]  # (n, boxes, y, x)
    return (strengths[..., None, None] * boxes).sum(1, keepdim=True)


class Heat(GridProblem):
    """Periodic diffusion y^ = x^ exp(-k^2 * amount) in float64; SIP: Bayesian-damped inverse diffusion.

    Diffusion keeps the mean, so predictions are mean-corrected to mean(y*).
    """

    def __init__(
        self,
        resolution: int = 64,
        amount: float = 8.0,
        relative_noise: float = 1e-6,
        batch_reduction: str = "sum",
    ) -> None:
        super().__init__(resolution, batch_reduction)
        self.amount = amount
        self.relative_noise = relative_noise

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x_true = hot_rectangles(n, self.resolution, generator)
        return x_true, self.simulate(x_true)

    def simulate(self, x: torch.Tensor) -> torch.Tensor:
        return diffuse.fourier(x.double(), self.amount)

    def prepare_prediction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x - x.mean(dim=(-2, -1), keepdim=True) + y_target.mean(dim=(-2, -1), keepdim=True)

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return diffuse.inverse_fourier_damped(y_target - y, self.amount, self.relative_noise)
