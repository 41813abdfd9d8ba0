"""Per-member optimizers over stacked parameters: torch.optim's single-tensor updates (what it runs on the
CPU by default) written with one column of hyper-parameters per member, so that every member steps
exactly as its own optimizer would (same operations in the same order), and with one state that reads
and writes each member's part in torch.optim's state_dict format (what a single run's checkpoint holds)."""
from __future__ import annotations

from typing import Any

import torch

Group = dict[str, Any]  # one member's param_groups[0], without "params"


class StackedOptimizer:
    """One torch.optim class for K members; subclasses write `update` for one stacked parameter.

    Hyper-parameters listed in `scalars` may differ between members (a column each); `static` names the
    settings that change the computation itself and must be equal. Members start with the optimizer's
    fresh state; `member_state_dict(k)` / `load_member_state_dict(k, ...)` convert to torch.optim's format.
    """

    torch_class: type[torch.optim.Optimizer]
    scalars: tuple[str, ...] = ()
    state_keys: tuple[str, ...] = ()

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        settings = {self.static(group) for group in groups}
        if groups[0].get("maximize"):
            raise ValueError(f"ensembles support {self.torch_class.__name__} without maximize")
        if len(settings) > 1:
            raise ValueError(f"ensemble members need the same {self.torch_class.__name__} settings "
                             f"{self.static_keys()}; got {sorted(settings)}")
        self.params = params
        self.groups = [dict(group) for group in groups]
        self.steps = 0
        device = next(iter(params.values())).device
        self.hyper = {key: torch.tensor([float(group[key]) for group in groups], dtype=torch.float64, device=device)
                      for key in self.scalars}
        self.hyper["minus_lr"] = -self.hyper["lr"]  # values derived from the hyper-parameters live here too
        self.state: dict[str, dict[str, torch.Tensor]] = {name: {} for name in params}
        self.per_step: dict[str, torch.Tensor] = {}  # values of the current step (K,), set by `prepare_step`
        self._columns: dict[tuple, torch.Tensor] = {}
        self._step_columns: dict[tuple, torch.Tensor] = {}

    @classmethod
    def static_keys(cls) -> tuple[str, ...]:
        return ("maximize", "has_weight_decay")

    @classmethod
    def static(cls, group: Group) -> tuple:
        """The settings that must be equal across members (flags, which terms are zero)."""
        return group["maximize"], group["weight_decay"] != 0

    def decayed(self, grad: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """grad + weight_decay * param where the members decay weights (torch's grad.add(param, alpha=...))."""
        if self.groups[0]["weight_decay"] == 0:
            return grad
        return grad.addcmul(param, self.hyper_column("weight_decay", param))

    def column(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per-member values (K,) as a column broadcasting over `like` (K, ...), in its dtype."""
        return value.to(like.dtype).view(-1, *(1,) * (like.dim() - 1))

    def hyper_column(self, key: str, like: torch.Tensor) -> torch.Tensor:
        cache_key = (key, like.dim(), like.dtype)
        if cache_key not in self._columns:
            self._columns[cache_key] = self.column(self.hyper[key], like)
        return self._columns[cache_key]

    def step_column(self, key: str, like: torch.Tensor) -> torch.Tensor:
        """`per_step[key]` as a column for `like`, made once per step and shape (not once per parameter)."""
        cache_key = (key, like.dim(), like.dtype)
        if cache_key not in self._step_columns:
            self._step_columns[cache_key] = self.column(self.per_step[key], like)
        return self._step_columns[cache_key]

    def add_scaled_(self, target: torch.Tensor, source: torch.Tensor, key: str) -> None:
        """target += hyper[key] * source per member: torch's `add_(source, alpha=...)` (one fused multiply-add,
        which `addcmul_` with a column computes alike)."""
        target.addcmul_(source, self.hyper_column(key, target))

    def zero_grad(self) -> None:
        for param in self.params.values():
            param.grad = None

    def prepare_step(self) -> None:
        """Per-step values shared by all parameters (after the step count has advanced)."""

    def step(self) -> None:
        self.begin_step()
        self.apply_step()

    def begin_step(self) -> None:
        """The host's part of a step: count it and compute its per-step values. A compiled update (`LossStep`)
        calls it before the compiled graph, which then holds only `apply_step`: traced, it would specialise the
        graph on the Python step count, and compile it again at every step."""
        self.steps += 1
        self._step_columns = {}
        self.prepare_step()

    @torch.no_grad()
    def apply_step(self) -> None:
        """The device's part of a step: update every parameter that has a gradient."""
        for name, param in self.params.items():
            if param.grad is not None:
                self.update(param, param.grad, self.state[name])

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def has_state(self) -> bool:
        """Whether torch.optim would hold per-parameter state now (most create it at the first step)."""
        return self.steps > 0

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Member k's optimizer state as torch.optim's `state_dict()` of its own optimizer."""
        state = {}
        if self.has_state():
            for index, name in enumerate(self.params):
                entry = {key: tensor[k].clone() for key, tensor in self.state[name].items()}
                if "step" in self.state_keys:
                    entry = {"step": torch.tensor(float(self.steps)), **entry}
                if entry:
                    state[index] = entry
        return {"state": state, "param_groups": [{**self.groups[k], "params": list(range(len(self.params)))}]}

    def load_member_state_dict(self, k: int, state_dict: dict[str, Any], steps: int) -> None:
        """Put member k's torch.optim state (of a run at `steps` updates) into its rows."""
        self.steps = steps
        for index, name in enumerate(self.params):
            for key, value in state_dict["state"].get(index, {}).items():
                if key == "step":
                    continue
                if key not in self.state[name]:
                    self.state[name][key] = torch.zeros_like(self.params[name])
                self.state[name][key][k].copy_(value)

    def select(self, keep: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        """Keep only the members `keep` (indices), stepping the new parameter tensors `params`."""
        indices = keep.tolist()
        self.params = params
        self.groups = [self.groups[i] for i in indices]
        self.hyper = {key: value[keep] for key, value in self.hyper.items()}
        self.state = {name: {key: tensor[keep] for key, tensor in entry.items()} for name, entry in self.state.items()}
        self._columns = {}

    def _zeros(self, state: dict[str, torch.Tensor], param: torch.Tensor, *keys: str) -> None:
        for key in keys:
            if key not in state:
                state[key] = torch.zeros_like(param)


class StackedAdam(StackedOptimizer):
    torch_class = torch.optim.Adam
    scalars = ("lr", "eps", "weight_decay")
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        super().__init__(params, groups)
        if groups[0]["amsgrad"] or groups[0].get("decoupled_weight_decay"):
            raise ValueError("ensembles support Adam without amsgrad and decoupled weight decay")
        device = next(iter(params.values())).device
        beta1, beta2 = (torch.tensor([float(group["betas"][i]) for group in groups], dtype=torch.float64,
                                     device=device) for i in (0, 1))
        self.hyper.update(beta1=beta1, beta2=beta2, one_minus_beta1=1 - beta1, one_minus_beta2=1 - beta2)

    @classmethod
    def static_keys(cls) -> tuple[str, ...]:
        return ("amsgrad", "maximize", "decoupled_weight_decay", "has_weight_decay")

    @classmethod
    def static(cls, group: Group) -> tuple:
        return (group["amsgrad"], group["maximize"], group.get("decoupled_weight_decay", False),
                group["weight_decay"] != 0)

    def prepare_step(self) -> None:
        # torch computes these in Python floats (double) per step, then applies them in the parameter's dtype
        self.per_step["minus_step_size"] = -(self.hyper["lr"] / (1 - self.hyper["beta1"] ** self.steps))
        self.per_step["correction2_sqrt"] = (1 - self.hyper["beta2"] ** self.steps) ** 0.5

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        self._zeros(state, param, "exp_avg", "exp_avg_sq")
        grad = self.decayed(grad, param)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, self.hyper_column("one_minus_beta1", param))
        # torch's addcmul_(t1, t2, value=v) and addcdiv_(t1, t2, value=v) are addcmul_(v * t1, t2), addcdiv_(v * t1, t2)
        exp_avg_sq.mul_(self.hyper_column("beta2", param)).addcmul_(self.hyper_column("one_minus_beta2", param) * grad,
                                                                    grad)
        denom = (exp_avg_sq.sqrt() / self.step_column("correction2_sqrt", param)).add_(self.hyper_column("eps", param))
        param.addcdiv_(self.step_column("minus_step_size", param) * exp_avg, denom)


class StackedSGD(StackedOptimizer):
    torch_class = torch.optim.SGD
    scalars = ("lr", "momentum", "dampening", "weight_decay")
    state_keys = ("momentum_buffer",)

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        super().__init__(params, groups)
        self.hyper["one_minus_dampening"] = 1 - self.hyper["dampening"]

    @classmethod
    def static_keys(cls) -> tuple[str, ...]:
        return ("has_momentum", "nesterov", "maximize", "has_weight_decay")

    @classmethod
    def static(cls, group: Group) -> tuple:
        return group["momentum"] != 0, group["nesterov"], group["maximize"], group["weight_decay"] != 0

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        group = self.groups[0]
        grad = self.decayed(grad, param)
        if group["momentum"] != 0:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = grad.detach().clone()
            else:
                buffer = state["momentum_buffer"].mul_(self.hyper_column("momentum", param))
                buffer.addcmul_(grad, self.hyper_column("one_minus_dampening", param))
            if group["nesterov"]:
                grad = grad.clone()
                self.add_scaled_(grad, state["momentum_buffer"], "momentum")
            else:
                grad = state["momentum_buffer"]
        self.add_scaled_(param, grad, "minus_lr")


class StackedAdagrad(StackedOptimizer):
    torch_class = torch.optim.Adagrad
    scalars = ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value")
    state_keys = ("step", "sum")

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        super().__init__(params, groups)
        for name, param in params.items():  # Adagrad creates its state with the optimizer
            self.state[name]["sum"] = torch.ones_like(param) * self.hyper_column("initial_accumulator_value", param)

    def has_state(self) -> bool:
        return True

    def prepare_step(self) -> None:
        self.per_step["minus_clr"] = -(self.hyper["lr"] / (1 + (self.steps - 1) * self.hyper["lr_decay"]))

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        grad = self.decayed(grad, param)
        state["sum"].addcmul_(grad, grad)
        std = state["sum"].sqrt().add_(self.hyper_column("eps", param))
        param.addcdiv_(self.step_column("minus_clr", param) * grad, std)


class StackedAdadelta(StackedOptimizer):
    torch_class = torch.optim.Adadelta
    scalars = ("lr", "rho", "eps", "weight_decay")
    state_keys = ("step", "square_avg", "acc_delta")

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        super().__init__(params, groups)
        self.hyper["one_minus_rho"] = 1 - self.hyper["rho"]

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        self._zeros(state, param, "square_avg", "acc_delta")
        grad = self.decayed(grad, param)
        rho, eps, one_minus_rho = (self.hyper_column("rho", param), self.hyper_column("eps", param),
                                   self.hyper_column("one_minus_rho", param))
        state["square_avg"].mul_(rho).addcmul_(one_minus_rho * grad, grad)
        std = state["square_avg"].add(eps).sqrt_()
        delta = state["acc_delta"].add(eps).sqrt_().div_(std).mul_(grad)
        state["acc_delta"].mul_(rho).addcmul_(one_minus_rho * delta, delta)
        self.add_scaled_(param, delta, "minus_lr")


class StackedRMSprop(StackedOptimizer):
    torch_class = torch.optim.RMSprop
    scalars = ("lr", "alpha", "eps", "weight_decay", "momentum")

    @classmethod
    def static_keys(cls) -> tuple[str, ...]:
        return ("centered", "maximize", "has_momentum", "has_weight_decay")

    @classmethod
    def static(cls, group: Group) -> tuple:
        return group["centered"], group["maximize"], group["momentum"] > 0, group["weight_decay"] != 0

    def __init__(self, params: dict[str, torch.Tensor], groups: list[Group]) -> None:
        super().__init__(params, groups)
        group = groups[0]
        self.state_keys = ("step", "square_avg", *(("momentum_buffer",) if group["momentum"] > 0 else ()),
                           *(("grad_avg",) if group["centered"] else ()))
        self.hyper["one_minus_alpha"] = 1 - self.hyper["alpha"]

    def update(self, param: torch.Tensor, grad: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        self._zeros(state, param, *self.state_keys[1:])
        group = self.groups[0]
        grad = self.decayed(grad, param)
        one_minus_alpha = self.hyper_column("one_minus_alpha", param)
        state["square_avg"].mul_(self.hyper_column("alpha", param)).addcmul_(one_minus_alpha * grad, grad)
        if group["centered"]:
            state["grad_avg"].lerp_(grad, one_minus_alpha)
            average = state["square_avg"].addcmul(state["grad_avg"], state["grad_avg"], value=-1).sqrt_()
        else:
            average = state["square_avg"].sqrt()
        average = average.add_(self.hyper_column("eps", param))
        if group["momentum"] > 0:
            state["momentum_buffer"].mul_(self.hyper_column("momentum", param)).addcdiv_(grad, average)
            self.add_scaled_(param, state["momentum_buffer"], "minus_lr")
        else:
            param.addcdiv_(self.hyper_column("minus_lr", param) * grad, average)


STACKED = {stacked.torch_class: stacked for stacked in (StackedAdam, StackedSGD, StackedAdagrad, StackedAdadelta,
                                                       StackedRMSprop)}


def stacked_optimizer_class(optimizer: torch.optim.Optimizer) -> type[StackedOptimizer] | None:
    """The stacked version of a torch optimizer (exactly its class), or None if there is none."""
    return STACKED.get(type(optimizer))


def member_group(optimizer: torch.optim.Optimizer) -> Group:
    """A single-group optimizer's hyper-parameters (its param_groups[0] less the parameters)."""
    if len(optimizer.param_groups) != 1:
        raise ValueError("ensembles support optimizers with one parameter group")
    return {key: value for key, value in optimizer.param_groups[0].items() if key != "params"}
