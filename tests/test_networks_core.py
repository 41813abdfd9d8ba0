"""U-Net and MLP: the paper's parameter counts, shapes, and clear errors for shapes that do not fit."""
from __future__ import annotations

import pytest
import torch

from sip_train.networks.mlp import MLP
from sip_train.networks.unet import UNet


def count(network: torch.nn.Module) -> int:
    return sum(p.numel() for p in network.parameters() if p.requires_grad)


def test_unet_has_the_papers_parameter_counts():
    assert count(UNet((1, 64, 64), (1, 64, 64))) == 37_697  # Poisson / heat (appendix B.2)
    assert count(UNet((2, 64, 64), (2, 64, 64), levels=5)) == 49_570  # fluid (appendix B.4)


@pytest.mark.parametrize("levels,resolution", [(4, 16), (4, 64), (2, 6), (5, 32)])
def test_unet_maps_fields_to_fields_of_the_same_grid(levels, resolution):
    network = UNet((2, resolution, resolution), (3, resolution, resolution), levels=levels, filters=4)
    assert network(torch.randn(2, 2, resolution, resolution)).shape == (2, 3, resolution, resolution)


def test_unet_rejects_a_grid_it_cannot_pool_down_naming_the_keys():
    with pytest.raises(ValueError, match=r"problem.resolution=30x30 .*network.levels=4.*divisible by 8"):
        UNet((1, 30, 30), (1, 30, 30), levels=4)


def test_unet_rejects_vector_problems():
    with pytest.raises(ValueError, match="network=unet needs 2D fields"):
        UNet((2,), (2,))


def test_mlp_maps_any_shape_to_any_shape():
    network = MLP((1, 8, 8), (2,), hidden=[16, 16], activation="sigmoid")
    assert network(torch.randn(5, 1, 8, 8)).shape == (5, 2)
    assert count(MLP((2,), (2,))) == (2 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32) + (32 * 2 + 2)


def test_mlp_rejects_unknown_activation_listing_choices():
    with pytest.raises(ValueError, match=r"network.activation='swish' is invalid: choose one of \['relu', 'sigmoid', 'tanh'\]"):
        MLP((2,), (2,), activation="swish")
