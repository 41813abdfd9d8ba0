"""AdaHessian subclass: runs on Conv1d/Conv3d kernels, identical to torch-optimizer elsewhere."""

import pytest
import torch
import torch_optimizer
from torch import nn

from sip_train.rules.adahessian import Adahessian, spatially_averaged

# AdaHessian's documented usage is backward(create_graph=True); torch warns about the grad cycle.
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")


class VolumeThenSequence(nn.Module):
    """Conv3d on a (B, 1, 4, 4, 4) volume, Conv1d along its flattened cells, Linear to (B, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(1, 2, kernel_size=3, padding=1)
        self.conv1d = nn.Conv1d(2, 2, kernel_size=3, padding=1)
        self.dense = nn.Linear(2 * 64, 1)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        features = torch.tanh(self.conv3d(volume)).flatten(2)
        return self.dense(torch.tanh(self.conv1d(features)).flatten(1))


def _regression(seed: int):
    generator = torch.Generator().manual_seed(seed)
    volume = torch.randn(8, 1, 4, 4, 4, generator=generator)
    target = volume.mean(dim=(1, 2, 3, 4)).unsqueeze(1) + 0.5
    return volume, target


def _train(optimizer, net: nn.Module, inputs: torch.Tensor, target: torch.Tensor, steps: int) -> list[float]:
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((net(inputs) - target) ** 2).mean()
        loss.backward(create_graph=True)
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_original_fails_on_conv1d():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6, 1))
    inputs, target = torch.randn(4, 1, 8), torch.randn(4, 1)
    with pytest.raises(UnboundLocalError):
        _train(torch_optimizer.Adahessian(net.parameters()), net, inputs, target, steps=1)


def test_spatial_average_per_dimension():
    hessian_diagonal = -torch.arange(2 * 3 * 4 * 5 * 6, dtype=torch.float64).view(2, 3, 4, 5, 6)
    averaged = spatially_averaged(hessian_diagonal)
    assert averaged.shape == (2, 3, 1, 1, 1)
    torch.testing.assert_close(averaged[1, 2, 0, 0, 0], hessian_diagonal[1, 2].abs().mean())
    conv2d = hessian_diagonal[0]
    torch.testing.assert_close(spatially_averaged(conv2d), conv2d.abs().mean(dim=[2, 3], keepdim=True))
    assert spatially_averaged(hessian_diagonal[0, 0]).shape == (4, 5, 1)
    torch.testing.assert_close(spatially_averaged(hessian_diagonal[0, 0, 0]), hessian_diagonal[0, 0, 0].abs())


def test_trains_conv1d_conv3d_network():
    torch.manual_seed(1)
    net = VolumeThenSequence()
    inputs, target = _regression(1)
    losses = _train(Adahessian(net.parameters(), lr=0.05), net, inputs, target, steps=50)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.1 * losses[0]


def test_matches_original_on_conv2d_network():
    def run(optimizer_class) -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(2)
        net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 3, padding=1))
        initial = net[0].weight.detach().clone()
        inputs = torch.randn(4, 1, 6, 6)
        target = inputs.roll(1, dims=-1)
        _train(optimizer_class(net.parameters(), lr=0.05), net, inputs, target, steps=5)
        return initial, [p.detach().clone() for p in net.parameters()]

    (initial, fixed), (_, original) = run(Adahessian), run(torch_optimizer.Adahessian)
    assert not torch.allclose(fixed[0], initial)
    for p_fixed, p_original in zip(fixed, original):
        assert torch.equal(p_fixed, p_original)
