"""torch.compile for a run: the `compile` setting's options, what of a rule can be compiled (from what the
rule declares), and one whole compiled update (network, physics, objective, backward and optimizer step)."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from sip_train.problems.base import InverseProblem
from sip_train.rules.base import StepInterface, UpdateRule

log = logging.getLogger(__name__)

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


def compile_parts(problem: InverseProblem, network: torch.nn.Module, rule: UpdateRule, options: dict) -> bool:
    """compile=true at construction: compile what torch.compile supports for this rule (the network and the
    physics, the network only, or nothing; AOTAutograd has no double backward), saying so in one line unless
    the whole update may be compiled at the start of training (returns whether it may)."""
    name = type(rule).__name__
    if rule.needs_double_backward:
        log.info("compile: %s back-propagates through a gradient, which torch.compile does not support; it runs "
                 "eager", name)
        return False
    if rule.differentiates_physics_twice:
        compile_components(problem, network, options, physics=False)
        inverse = getattr(rule, "inverse", None)
        log.info("compile: %s%s differentiates the physics twice, which torch.compile does not support; compiled "
                 "the network only", name, f"'s inverse ({inverse.name})" if inverse is not None else "")
        return False
    compile_components(problem, network, options)
    if not rule.updates_by_loss:
        log.info("compile: %s updates by its own training step; compiled the network and the physics only", name)
        return False
    return True


def compile_update(step: StepInterface, rule: UpdateRule, optimizer: torch.optim.Optimizer, options: dict,
                   device: torch.device, direct: bool) -> "CompiledUpdate | None":
    """compile=true at the start of training: the whole update compiled where the optimizer is stepped
    directly (`direct`: one device, 32-bit, no callback hook in between), else None (the network and the
    physics stay compiled); says which in one line."""
    if not direct:
        log.info("compile: Lightning's strategy, precision plugin or a callback's hooks step the optimizer here; "
                 "compiled the network and the physics only")
        return None
    options = update_compile_options(options, device)
    log.info("compile: the whole %s update (network, physics, objective, backward, optimizer step), torch.compile %s",
             type(rule).__name__, options or "defaults")
    return CompiledUpdate(step, rule, optimizer, options)


class LossStep:
    """One update made of a loss, one backward and one optimizer step, under torch.compile's `options` (None: eager).

    `loss(*inputs)` returns the value to back-propagate and the outputs to return (all returned detached). Compiled,
    the loss and its backward become one graph (more where they read the host), the optimizer step another (torch
    breaks the graph around `Optimizer.step` on purpose), with none of the framework's Python in between. With CUDA
    graphs (mode "reduce-overhead") the outputs are copied out of the graphs' memory, which the next update reuses."""

    def __init__(self, loss: Callable[..., tuple[torch.Tensor, ...]], optimizer: torch.optim.Optimizer | Any,
                 options: dict | None) -> None:
        self.loss, self.optimizer = loss, optimizer
        # an optimizer whose step has a host part (`begin_step`, e.g. a Python step count) and a device part
        # (`apply_step`) runs the first before the (compiled) update and only the second inside it
        self.split_step = hasattr(optimizer, "begin_step") and hasattr(optimizer, "apply_step")
        self.cuda_graphs = options is not None and options.get("mode") == "reduce-overhead"
        if options is not None:  # every LossStep shares `_update`'s code, whose compiled versions torch caps (at
            torch.compiler.reset()  # 8): the runs of one process (a multirun, ensembles) each start afresh
        self.update = self._update if options is None else torch.compile(self._update, **options)

    def _update(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss, *outputs = self.loss(*inputs)
        result = loss.detach(), *(output.detach() for output in outputs)
        loss.backward()
        self.optimizer.apply_step() if self.split_step else self.optimizer.step()
        return result

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One update on `inputs`: the loss and the outputs, detached."""
        self.optimizer.zero_grad()
        if self.split_step:
            self.optimizer.begin_step()
        if self.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()
        result = self.update(*inputs)
        return tuple(value.clone() for value in result) if self.cuda_graphs else result


class CompiledUpdate(LossStep):
    """One whole update of a rule whose update is `rule.loss`, backward and an optimizer step, compiled as
    `LossStep` compiles it: network, physics and objective, their backward, the optimizer step."""

    def __init__(self, step: StepInterface, rule: UpdateRule, optimizer: torch.optim.Optimizer,
                 options: dict) -> None:
        super().__init__(lambda y_target, *observed: rule.loss(step, y_target, *observed), optimizer, options)

    def __call__(self, y_target: torch.Tensor, *observed: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on y_target (and the problem's observed inputs); the batch objective, prediction and simulation as `UpdateRule.training_step`."""
        loss, x, y = self.run(y_target, *observed)
        return {"loss": loss, "x": x, "y": y}
