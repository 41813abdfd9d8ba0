"""K networks of one architecture evaluated as one: parameters stacked along a leading member dimension."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class StackedNetwork:
    """The networks of an ensemble's members, evaluated by `vmap` over `functional_call`.

    `params[name]` is a leaf tensor (K, *shape) whose row k is member k's parameter `name`; inputs are
    (K, B, *in_shape), one batch per member, and outputs (K, B, *out_shape).
    """

    def __init__(self, networks: list[nn.Module]) -> None:
        if any(True for network in networks for _ in network.buffers()):
            raise ValueError("an ensemble cannot stack networks with buffers (e.g. batch norm statistics)")
        self.skeleton = copy.deepcopy(networks[0]).to("meta")
        self.skeleton._compiled_call_impl = None  # a member compiled alone (compile=true): the ensemble compiles its own
        self.params, _ = stack_module_state(networks)
        self.names = list(self.params)
        self._forward = vmap(self._member_forward)

    def _member_forward(self, params: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(self.skeleton, params, (inputs,))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self._forward(self.params, inputs)

    def __len__(self) -> int:
        return len(next(iter(self.params.values())))

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters as its own network's state_dict."""
        return {name: tensor[k].detach().clone() for name, tensor in self.params.items()}

    def load_member_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a network state_dict into member k's rows."""
        with torch.no_grad():
            for name, tensor in self.params.items():
                tensor[k].copy_(state[name])

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the members `keep` (indices), in that order."""
        self.params = {name: tensor.detach()[keep].requires_grad_(True) for name, tensor in self.params.items()}
