"""Coupled nonlinear oscillators steered by one control signal (HIG paper, Schnell et al. 2022, appendix).

State x = (q_1..q_N, p_1..p_N), shape (B, 2N): positions q and velocities p of N oscillators on a
chain. Equations of motion (unit mass and frequency, cubic nearest-neighbour coupling):

    dq_i/dt = p_i,
    dp_i/dt = -q_i + (q_{i+1} - q_i)^3 + (q_{i-1} - q_i)^3 + CONTROL_GAIN c(t) [i = N],

where neighbours outside the chain contribute 0 and the scalar control c acts on the last
oscillator only. Time integration: classical RK4, the control held constant within a step.
Pure functions of any float dtype; time in the oscillators' own units.
"""
from __future__ import annotations

import torch

CONTROL_GAIN = 3.0  # factor of the control in dp/dt of the last oscillator (the authors' scripts)


def derivative(state: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """dx/dt for states (B, 2N) and controls (B,) held at this instant."""
    q, p = state.chunk(2, dim=-1)
    difference = q[..., 1:] - q[..., :-1]  # q_{i+1} - q_i between neighbours, (B, N - 1)
    zero = torch.zeros_like(q[..., :1])
    # (q_{i+1} - q_i)^3 acts on i with a right neighbour, (q_{i-1} - q_i)^3 = -(q_i - q_{i-1})^3 on i with a left one
    cubic = torch.cat([difference.pow(3), zero], -1) - torch.cat([zero, difference.pow(3)], -1)
    drive = torch.cat([torch.zeros_like(q[..., :-1]), CONTROL_GAIN * control[..., None]], -1)
    return torch.cat([p, -q + cubic + drive], -1)


def rk4_step(state: torch.Tensor, control: torch.Tensor, dt: float) -> torch.Tensor:
    """One classical Runge-Kutta step of size dt with the control (B,) constant over the step."""
    k1 = derivative(state, control)
    k2 = derivative(state + 0.5 * dt * k1, control)
    k3 = derivative(state + 0.5 * dt * k2, control)
    k4 = derivative(state + dt * k3, control)
    return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def trajectory(initial_state: torch.Tensor, controls: torch.Tensor, dt: float) -> torch.Tensor:
    """States at t = 0, dt, ..., Nt dt: (B, Nt + 1, 2N) from initial states (B, 2N) and controls (B, Nt)."""
    states = [initial_state]
    for control in controls.unbind(-1):
        states.append(rk4_step(states[-1], control, dt))
    return torch.stack(states, dim=-2)


def final_state(initial_state: torch.Tensor, controls: torch.Tensor, dt: float) -> torch.Tensor:
    """The state after len(controls) RK4 steps, (B, 2N): what the control is judged by."""
    state = initial_state
    for control in controls.unbind(-1):
        state = rk4_step(state, control, dt)
    return state


def sample(n: int, generator: torch.Generator, oscillators: int) -> torch.Tensor:
    """Initial states x0 ~ U[0, 1)^(2N), shape (n, 2N), on generator.device."""
    return torch.rand(n, 2 * oscillators, generator=generator, device=generator.device)
