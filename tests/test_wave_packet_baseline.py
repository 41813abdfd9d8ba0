"""The wave packet's L-BFGS-B baseline on the mean and on the sum of the squared error: the same minimisers,
but the sum's first trial step (the full gradient, 256x the mean's) jumps out of the start's well."""
import pytest
import torch

from sip_train.physics import wave_packet

F64 = torch.float64


def _packets(t0: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.tensor(t0, dtype=F64)[:, None]
    return x, wave_packet.forward(x)


def test_the_mean_finds_noise_free_packets_inside_the_start_well():
    x_true, y_target = _packets([74.0, 76.0, 77.3, 78.1, 79.5])  # within 3 samples of the start (wells ~9 apart)
    torch.testing.assert_close(wave_packet.fit_lbfgsb(y_target, 76.8), x_true, rtol=0, atol=1e-5)


def test_the_sum_has_the_same_minimiser_but_its_first_step_leaves_the_well():
    x_true, y_target = _packets([76.0, 78.1])
    fitted = wave_packet.fit_lbfgsb(y_target, 76.8, reduction="sum")
    torch.testing.assert_close(fitted[0], x_true[0], rtol=0, atol=1e-5)  # 0.8 samples away: found
    assert (fitted[1] - x_true[1]).abs().item() > 4.5  # 1.3 samples away: ends in another well


def test_an_unknown_reduction_is_refused_naming_the_choices():
    _, y_target = _packets([70.0])
    with pytest.raises(ValueError, match="reduction='median' is invalid: choose mean or sum"):
        wave_packet.fit_lbfgsb(y_target, reduction="median")
