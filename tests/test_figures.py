"""Validation figures: every problem's (found in conf/problem/) and the default one for any shapes of x
and y render with a title, and every colour-coded panel (field image, coloured scatter) has a colourbar."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import pytest
import torch
from hydra.utils import instantiate
from matplotlib.figure import Figure

from conftest import compose_config, options
from sip_train import plots
from sip_train.problems.base import InverseProblem

#: Problem keys that shrink a problem to test size, applied where the problem has them.
TINY_KEYS = {"resolution": 8, "lbfgsb_max_iter": 10, "steps": 8}


def tiny_problem(name: str) -> InverseProblem:
    problem = compose_config([f"problem={name}"]).problem
    return instantiate(problem, **{key: value for key, value in TINY_KEYS.items() if key in problem})


def validation_batch(problem: InverseProblem, examples: int = 2) -> tuple[torch.Tensor, ...]:
    """(x, x_true, y, y_target, *observed) with x a perturbed truth (noise where no truth is known), as the
    module hands them to `figure`."""
    generator = torch.Generator().manual_seed(0)
    x_true, y_target, *observed = problem.sample(examples, generator)
    noise = 0.1 * torch.randn(examples, *problem.x_shape, generator=generator, dtype=y_target.dtype)
    x = problem.prepare_prediction(noise if x_true is None else x_true + noise, y_target)
    return x, x_true, problem.simulate(x, *observed), y_target, *observed


def colour_coded(fig: Figure) -> list:
    """Every image and colour-mapped collection in the figure's data axes (not in its colourbars)."""
    data_axes = [ax for ax in fig.get_axes() if not hasattr(ax, "_colorbar")]
    return [artist for ax in data_axes for artist in [*ax.images, *ax.collections]
            if getattr(artist, "get_array", lambda: None)() is not None and artist.get_cmap() is not None
            and hasattr(artist, "colorbar")]


def assert_readable(fig: Figure, title: str, render: bool = True) -> None:
    assert title in fig.get_suptitle()
    mapped = colour_coded(fig)
    assert all(artist.colorbar is not None for artist in mapped), "a colour-coded panel has no colourbar"
    if render:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=40)
        assert buffer.tell() > 1000
    plt.close(fig)


@pytest.mark.parametrize("name", options("problem"))
def test_every_problem_figure_renders_titled_with_colourbars(name):
    problem = tiny_problem(name)
    fig = problem.figure(*validation_batch(problem))
    plots.add_title(fig, "step 40, val x_l1 = 1.5")
    assert_readable(fig, "step 40, val x_l1 = 1.5")
    assert any(ax.images or ax.lines or ax.collections for ax in fig.get_axes())


@pytest.mark.parametrize("shape", [(1,), (4,), (1, 32), (2, 8, 8), (1, 6, 6)],
                         ids=["scalar", "4-vector", "signal", "2-channel field", "field"])
def test_default_figure_draws_any_shape(shape):
    examples = 2
    x_true = torch.randn(examples, *shape, generator=torch.Generator().manual_seed(0))
    x = x_true + 0.1
    fig = InverseProblem.figure(InverseProblem(), x, x_true, 2 * x, 2 * x_true)
    plots.add_title(fig, "step 0")
    images = [image for ax in fig.get_axes() for image in ax.images]
    lines = [line for ax in fig.get_axes() for line in ax.lines]
    if len(shape) == 3:  # per example: estimate, reference and their difference of every channel, for y and for x
        assert len(images) == examples * 3 * shape[0] * 2
        assert all(image.get_array().shape == shape[1:] for image in images)
        error_maps = [ax for ax in fig.get_axes() if ax.get_title().startswith("x - x*")]
        assert len(error_maps) == shape[0]  # titled in the first row
        torch.testing.assert_close(torch.from_numpy(error_maps[0].images[0].get_array().data), 0.1 + 0 * x[0, 0])
    elif shape == (1,):  # one scatter plot of estimates against references for y and for x
        scatters = [c for ax in fig.get_axes() for c in ax.collections]
        assert not images and len(scatters) == 2 and all(len(c.get_offsets()) == examples for c in scatters)
    else:  # per example an estimate line over a reference line, for y and for x
        assert not images and len(lines) == examples * 2 * 2
        assert all(len(line.get_xdata()) == shape[-1] for line in lines)
    assert_readable(fig, "step 0", render=False)


def test_a_title_goes_above_the_problems_own_title():
    fig, ax = plt.subplots()
    fig.suptitle("sine, xi = 2")
    plots.add_title(fig, "step 7, val x_l1 = 0.25")
    assert fig.get_suptitle() == "step 7, val x_l1 = 0.25\nsine, xi = 2"
    plt.close(fig)


def test_a_validation_figure_is_titled_with_the_method_the_step_and_the_error(tiny_config, monkeypatch):
    from sip_train.run import train
    titles = []
    add_title = plots.add_title
    monkeypatch.setattr(plots, "add_title", lambda fig, title: (titles.append(title), add_title(fig, title)))
    summary = train(tiny_config("problem=poisson", "problem.resolution=8", "optimizer=sip", "trainer.max_steps=2",
                                "validate_at_start=false", "figure_examples=2"))
    assert titles == [f"poisson/sip (auto: problem), step 2, val x_l1 = {summary['x_l1']:.4g}"]
