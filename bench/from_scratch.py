"""Training loops written from scratch for the sine, heat and Poisson problems: their own data, physics,
objective and update in plain PyTorch, none of sip-train's code (the grid problems use the same network
module, built from the run's config with the same seed, so that both sides train the same network). They are
the yardstick of bench/minimal_loop.py: what a training step costs without any framework or package kernel.
"""
from __future__ import annotations

import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn


class ScratchLoop:
    """One update per `step()`: a fresh batch, the rule's objective, backward, Adam (the inner optimizer of SIP
    too, as in the package's configs)."""

    def __init__(self, cfg: DictConfig, device: torch.device, network: nn.Module) -> None:
        self.rule = cfg.optimizer._target_.rsplit(".", 1)[-1]
        if self.rule not in ("PhysicsGradient", "SIP"):
            raise ValueError(f"no from-scratch loop for optimizer {self.rule}: choose adam or sip")
        self.sip = self.rule == "SIP"
        self.eta = float(cfg.optimizer.get("eta", 1.0))
        self.batch = cfg.data.batch_size
        self.device = device
        self.network = network.to(device).train()
        self.optimizer = torch.optim.Adam(self.network.parameters(), lr=cfg.optimizer.lr)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)

    def step(self) -> torch.Tensor:
        y_target = self.targets()
        x = self.prediction(y_target)
        if self.sip:
            with torch.no_grad():
                x_target = x + self.eta * self.correction(x.detach(), y_target)
            loss = self.reduce(0.5 * (x - x_target).flatten(1).pow(2).sum(1))
        else:
            loss = self.reduce(0.5 * (self.physics(x) - y_target).flatten(1).pow(2).sum(1))
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    # what each problem defines
    def targets(self) -> torch.Tensor: ...
    def prediction(self, y_target: torch.Tensor) -> torch.Tensor: ...
    def physics(self, x: torch.Tensor) -> torch.Tensor: ...
    def correction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor: ...
    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        return per_example.sum()


class ScratchSine(ScratchLoop):
    """y = (sin(u_1), u_2), u = diag(gamma/xi, gamma xi) R_phi x; y* uniform in [-1, 1]^2; SIP: saddle-free Newton
    on the analytic gradient and Hessian, in float64; the batch objective is the mean."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        torch.manual_seed(cfg.seed)
        hidden = [2, 32, 64, 32]
        layers = [m for a, b in zip(hidden, hidden[1:]) for m in (nn.Linear(a, b), nn.ReLU())]
        super().__init__(cfg, device, nn.Sequential(*layers, nn.Linear(32, 2)))
        p = cfg.problem
        phi = math.radians(p.phi)
        rotation = torch.tensor([[math.cos(phi), -math.sin(phi)], [math.sin(phi), math.cos(phi)]], dtype=torch.float64)
        scale = torch.tensor([p.gamma / p.xi, p.gamma * p.xi], dtype=torch.float64)
        self.map64 = (scale[:, None] * rotation).to(device)  # u = M x
        self.map32 = self.map64.float()
        self.limit = p.loss_change_limit

    def targets(self) -> torch.Tensor:
        return 2 * torch.rand(self.batch, 2, generator=self.generator, device=self.device) - 1

    def prediction(self, y_target: torch.Tensor) -> torch.Tensor:
        return self.network(y_target)

    def physics(self, x: torch.Tensor) -> torch.Tensor:
        u = x @ self.map32.T
        return torch.stack([torch.sin(u[:, 0]), u[:, 1]], 1)

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        return per_example.mean()

    def correction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        u = x.double() @ self.map64.T
        y = y_target.double()
        residual = torch.sin(u[:, 0]) - y[:, 0]
        grad_u = torch.stack([residual * torch.cos(u[:, 0]), u[:, 1] - y[:, 1]], 1)
        curv_u = torch.stack([torch.cos(u[:, 0]) ** 2 - residual * torch.sin(u[:, 0]), torch.ones_like(residual)], 1)
        gradient = grad_u @ self.map64  # M^T g_u
        hessian = self.map64.T @ (curv_u[:, :, None] * self.map64)  # M^T diag(h_u) M
        values, vectors = torch.linalg.eigh(hessian)
        g = torch.einsum("bij,bi->bj", vectors, gradient)
        newton = torch.where(values == 0, 0.0, g / values).abs()
        geometric_mean = values.prod(1, keepdim=True).abs().sqrt()
        capped = torch.where(g == 0, 0.0, self.limit / g).abs()
        length = torch.where(values > geometric_mean, newton, newton.minimum(capped))
        return torch.einsum("bij,bj->bi", vectors, -torch.sign(g) * length).float()


class ScratchGrid(ScratchLoop):
    """A 2D grid problem with the package's network (built from the run's config with the run's seed)."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        self.n = cfg.problem.resolution
        torch.manual_seed(cfg.seed)
        shape = (1, self.n, self.n)
        super().__init__(cfg, device, instantiate(cfg.network, in_shape=shape, out_shape=shape))

    def prediction(self, y_target: torch.Tensor) -> torch.Tensor:
        return self.network(y_target.float())


class ScratchPoisson(ScratchGrid):
    """lap(y) = x with zero boundaries, solved exactly by sine transforms (matrix products); x* smooth noise drawn
    in Fourier space; SIP: dx = -lap(y - y*)."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        k = torch.arange(1, self.n + 1, dtype=torch.float64)
        sines = math.sqrt(2 / (self.n + 1)) * torch.sin(math.pi * k[:, None] * k[None, :] / (self.n + 1))
        eigen = -4 * torch.sin(math.pi * k / (2 * (self.n + 1))) ** 2
        self.sines = sines.float().to(device)
        self.inverse_eigen = (1 / (eigen[:, None] + eigen[None, :])).float().to(device)
        f = torch.fft.fftfreq(self.n, dtype=torch.float64)
        fr = torch.fft.rfftfreq(self.n, dtype=torch.float64)
        k2 = f[:, None] ** 2 + fr[None, :] ** 2
        scale, smoothness = cfg.problem.noise_scale, cfg.problem.noise_smoothness
        envelope = torch.where(k2 > 0, torch.exp(-k2 * scale**2 / 4) * k2.clamp_min(1e-12) ** (-smoothness / 2), 0.0)
        self.envelope = (envelope / envelope.square().sum().sqrt() * self.n).float().to(device)

    def targets(self) -> torch.Tensor:
        spectrum = torch.randn(self.batch, 1, self.n, self.n // 2 + 1, 2, generator=self.generator, device=self.device)
        x_true = torch.fft.irfft2(torch.view_as_complex(spectrum) * self.envelope, s=(self.n, self.n))
        return self.physics(x_true)

    def physics(self, x: torch.Tensor) -> torch.Tensor:
        return self.sines @ ((self.sines @ x @ self.sines) * self.inverse_eigen) @ self.sines

    def correction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        r = torch.nn.functional.pad(self.physics(x) - y_target, (1, 1, 1, 1))
        return -(r[..., :-2, 1:-1] + r[..., 2:, 1:-1] + r[..., 1:-1, :-2] + r[..., 1:-1, 2:] - 4 * r[..., 1:-1, 1:-1])


class ScratchHeat(ScratchGrid):
    """Periodic diffusion by rfft2 in float64; x* sums of 4-10 soft-edged hot boxes; predictions mean-corrected
    to mean(y*); SIP: Bayesian-damped inverse diffusion of the residual."""

    def __init__(self, cfg: DictConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        f = torch.fft.fftfreq(self.n, dtype=torch.float64, device=device)
        fr = torch.fft.rfftfreq(self.n, dtype=torch.float64, device=device)
        self.log_k = (2 * math.pi) ** 2 * (f[:, None] ** 2 + fr[None, :] ** 2) * cfg.problem.amount
        self.log_k_capped = self.log_k.clamp(max=88.0)
        self.damping = torch.exp(-self.log_k)
        self.prior = self.n * torch.exp(-self.log_k_capped)
        self.noise = cfg.problem.relative_noise
        self.cells = torch.arange(self.n, dtype=torch.float64, device=device) + 0.5

    def targets(self) -> torch.Tensor:
        g, b, n = self.generator, self.batch, self.n
        options = dict(generator=g, device=self.device, dtype=torch.float64)
        count = 4 + torch.floor(7 * torch.rand(b, 1, **options))
        strength = torch.rand(b, 10, **options) * (torch.arange(10, device=self.device) < count)
        half = torch.rand(b, 10, 2, **options) * 10
        centre = ((torch.rand(b, 10, 2, **options) - 0.5) * 0.8 * n + 0.5 * n).clamp(min=half).minimum(n - half)
        low, high = (centre - half)[..., None], (centre + half)[..., None]
        cover = (torch.minimum(self.cells + 0.5, high) - torch.maximum(self.cells - 0.5, low)).clamp(0, 1)
        x_true = (strength[..., None, None] * cover[:, :, 0, :, None] * cover[:, :, 1, None, :]).sum(1, keepdim=True)
        return self.physics(x_true)

    def prediction(self, y_target: torch.Tensor) -> torch.Tensor:
        x = super().prediction(y_target).double()
        return x - x.mean((-2, -1), keepdim=True) + y_target.mean((-2, -1), keepdim=True)

    def physics(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(x) * self.damping, s=(self.n, self.n))

    def correction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        residual = y_target - self.physics(x)
        spectrum = torch.fft.rfft2(residual)
        amplitude = spectrum.abs()
        noise = (self.noise * residual).square().sum((-2, -1), keepdim=True).sqrt()
        signal = torch.exp(-0.5 * (amplitude / self.prior) ** 2)
        p = torch.nan_to_num(signal / (signal + torch.exp(-0.5 * (amplitude / noise) ** 2)), nan=0.0)
        action = torch.where((p <= 0.5) | (p >= 0.68), 2 * p - 1, 0.0)
        return torch.fft.irfft2(spectrum * torch.exp(self.log_k_capped * action), s=(self.n, self.n))


LOOPS = {"sine": ScratchSine, "poisson": ScratchPoisson, "heat": ScratchHeat}
