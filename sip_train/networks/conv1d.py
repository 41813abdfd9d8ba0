"""The wave-packet network (appendix C.1): 1D convolution blocks, dense layers, sigmoid scaled to a range."""
from __future__ import annotations

import torch
from torch import nn

from sip_train.networks.mlp import MLP


def pool_conv_block(in_channels: int, filters: int) -> nn.Sequential:
    """Max-pool by 2, then two kernel-3 convolutions (length-preserving), each followed by ReLU."""
    return nn.Sequential(
        nn.MaxPool1d(2),
        nn.Conv1d(in_channels, filters, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv1d(filters, filters, kernel_size=3, padding=1),
        nn.ReLU(),
    )


class Conv1dNet(nn.Module):
    """Maps signals y (B, C, L) to x (B, *out_shape) inside `output_range`: x = low + (high - low) * sigmoid(z).

    A zero logit z gives the centre of the range (76.8 for the wave packet's t0 in [25.6, 128)), which is
    where the paper starts L-BFGS-B. Defaults are the paper's: 5 blocks of 16 maps, dense layers 64 and 32.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        output_range: tuple[float, float],
        blocks: int = 5,
        filters: int = 16,
        hidden: list[int] = (64, 32),
    ) -> None:
        super().__init__()
        if len(in_shape) != 2:
            raise ValueError(
                f"network=conv1d needs 1D signals shaped (channels, length); this problem has "
                f"input {tuple(in_shape)}: choose network=mlp"
            )
        channels, length = in_shape
        if blocks < 1 or length >> blocks < 1:
            raise ValueError(
                f"network.blocks={blocks} does not fit signals of length {length}: "
                f"between 1 and {length.bit_length() - 1} max-pools by 2"
            )
        if len(output_range) != 2 or not output_range[0] < output_range[1]:
            raise ValueError(f"network.output_range={list(output_range)} is invalid: needs [low, high] with low < high")
        self.low, self.high = float(output_range[0]), float(output_range[1])
        widths = [channels] + [filters] * blocks
        self.features = nn.Sequential(*(pool_conv_block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])))
        self.dense = MLP((filters * (length >> blocks),), out_shape, hidden, activation="relu")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.dense(self.features(y)))
