"""torch.compile for a run: the `compile` setting's options, what of a rule can be compiled, and one whole
compiled update (network, physics, objective, backward and optimizer step)."""
from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from sip_train.inverse.auto import Auto
from sip_train.inverse.gauss_newton import GaussNewton
from sip_train.problems.base import InverseProblem
from sip_train.rules.base import StepInterface, UpdateRule

#: The keys a `compile` mapping may set (torch.compile's own arguments).
COMPILE_KEYS = ("backend", "mode")


def compile_options(compile: bool | dict | DictConfig) -> dict | None:
    """torch.compile's arguments for the `compile` setting: None for false, {} for true (Inductor, its mode
    chosen by device at the start of training), or the given mapping of `backend` and `mode`."""
    if isinstance(compile, bool):
        return {} if compile else None
    options = OmegaConf.to_container(compile) if isinstance(compile, DictConfig) else compile
    if not isinstance(options, dict) or set(options) - set(COMPILE_KEYS) or not all(
            isinstance(value, str) for value in options.values()):
        raise ValueError(f"compile={compile!r} is invalid: use true, false, or a mapping of {list(COMPILE_KEYS)} to "
                         "torch.compile's names (e.g. compile={backend:aot_eager})")
    return dict(options)


def update_compile_options(options: dict, device: torch.device) -> dict:
    """`options` with Inductor's mode chosen for `device` unless given: CUDA graphs on a GPU ("reduce-overhead":
    an update's graphs replay without a launch per kernel), Inductor's default on the CPU."""
    if "mode" in options or options.get("backend", "inductor") != "inductor" or device.type != "cuda":
        return options
    return {**options, "mode": "reduce-overhead"}


def compile_components(problem: InverseProblem, network: torch.nn.Module, options: dict | None = None,
                       physics: bool = True) -> None:
    """torch.compile the network (in place: state_dict keys stay the same) and, if `physics`, the problem's
    physics, with torch.compile's `options` (backend, mode); used by validation and by rules not compiled whole."""
    options = options or {}
    network.compile(**options)
    for hook in ("simulate", "inverse_update", "simulate_and_update") if physics else ():
        setattr(problem, hook, torch.compile(getattr(problem, hook), **options))


def differentiates_physics_twice(rule: UpdateRule, problem: InverseProblem) -> bool:
    """Whether the rule's inverse differentiates the simulator's derivatives (SIP's Gauss-Newton: J v by a double
    vjp or forward mode), which compiled physics do not support (AOTAutograd has no double backward)."""
    inverse = getattr(rule, "inverse", None)
    return isinstance(inverse.choose(problem) if isinstance(inverse, Auto) else inverse, GaussNewton)


class CompiledUpdate:
    """One whole update of a rule whose update is `rule.loss`, backward and an optimizer step, under one
    torch.compile: the network, the physics and the objective become one graph with its compiled backward (more
    where they read the host), the optimizer step another (torch breaks the graph around `Optimizer.step` on
    purpose), with none of the framework's Python in between. With CUDA graphs (mode "reduce-overhead") the outputs are copied out of the graphs'
    memory, which the next update reuses."""

    def __init__(self, step: StepInterface, rule: UpdateRule, optimizer: torch.optim.Optimizer,
                 options: dict) -> None:
        self.step, self.rule, self.optimizer = step, rule, optimizer
        self.cuda_graphs = options.get("mode") == "reduce-overhead"
        self.compiled = torch.compile(self._update, **options)

    def _update(self, y_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, x, y = self.rule.loss(self.step, y_target)
        result = loss.detach(), x.detach(), y
        loss.backward()
        self.optimizer.step()
        return result

    def __call__(self, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on y_target; the batch objective, prediction and simulation as `UpdateRule.training_step`."""
        self.optimizer.zero_grad()
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss, x, y = self.compiled(y_target)
        if self.cuda_graphs:
            loss, x, y = loss.clone(), x.clone(), y.clone()
        return {"loss": loss, "x": x, "y": y}
