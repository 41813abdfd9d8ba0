"""Fully-connected network on flattened inputs, for vector problems (and small grids)."""
from __future__ import annotations

import math

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Maps y (B, *in_shape) to x (B, *out_shape) through hidden layers of the given widths."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        hidden: list[int] = (32, 64, 32),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"network.activation={activation!r} is invalid: choose one of {sorted(ACTIVATIONS)}")
        self.out_shape = tuple(out_shape)
        widths = [math.prod(in_shape), *hidden]
        layers: list[nn.Module] = [nn.Flatten()]
        for cin, cout in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(cin, cout), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], math.prod(out_shape)))
        self.layers = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.layers(y).view(-1, *self.out_shape)
