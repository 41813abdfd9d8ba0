"""Per-example iterative solvers as baselines for trained networks (paper Fig. 13).

Gradient descent and L-BFGS-B minimise L(x) = problem.physics_loss(x, y*) for every validation
example on its own, from x0 = 0, for N iterations; they move the unknowns x only (a problem's
observed inputs stay as drawn). Their metrics and time are reported beside the predictions of
trained networks on the same examples.

    python -m sip_train.iterative outputs/heat-sip/RUN outputs/heat-adam/RUN --iterations 1000
    python -m sip_train.iterative problem=heat data.val_size=16 --iterations 100 --out fig13

Run directories give their validation set (problem, data and seed of their .hydra/config.yaml,
which must agree) and their networks (checkpoints/last.ckpt); without any, Hydra overrides
compose the validation set and only the iterative solvers run.
"""
from __future__ import annotations

import argparse
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.optimize  # noqa: E402
import torch  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from sip_train.config import compose_config  # noqa: E402
from sip_train.module import InverseProblemModule  # noqa: E402
from sip_train.problems.base import Batch, InverseProblem, Observed, batch_rows  # noqa: E402
from sip_train.report_format import legend_outside, log_scale_if_positive, markdown, save  # noqa: E402
from sip_train.summary import read_summary  # noqa: E402

#: observe(iteration, x, examples): called with the iterate of `examples` at each iteration.
Observer = Callable[[int, torch.Tensor, slice], None]


class Recorder:
    """Per-example metrics of a solver at every `every`-th iteration, and the solver's time to
    reach them (the recorder's own time left out).

    Attributes:
        values: metric name -> array (records, examples).
        seconds: array (records, examples): solver time spent on each example up to that record
            (time spent on several examples at once is shared evenly among them).
    """

    def __init__(self, problem: InverseProblem, x_true: torch.Tensor | None, y_target: torch.Tensor,
                 iterations: int, every: int, observed: Observed = ()) -> None:
        self.problem, self.x_true, self.y_target, self.every = problem, x_true, y_target, every
        self.observed = observed
        self.iterations = list(range(0, iterations + 1, every))
        if self.iterations[-1] != iterations:
            self.iterations.append(iterations)
        self.values: dict[str, np.ndarray] = {}
        self.seconds = np.full((len(self.iterations), len(y_target)), np.nan)
        self._clock = np.zeros(len(y_target))
        self._since = time.perf_counter()

    def __call__(self, iteration: int, x: torch.Tensor, examples: slice = slice(None)) -> None:
        share = self._clock[examples]
        share += (time.perf_counter() - self._since) / len(share)
        if iteration in self.iterations:
            row = self.iterations.index(iteration)
            x_true, y_target, *observed = batch_rows((self.x_true, self.y_target, *self.observed), examples)
            with torch.no_grad():
                y = self.problem.simulate(x, *observed)
                metrics = self.problem.metrics(x, x_true, y, y_target, *observed)
            for name, value in metrics.items():
                self.values.setdefault(name, np.full(self.seconds.shape, np.nan))[row, examples] = value.double().cpu().numpy()
            self.seconds[row, examples] = self._clock[examples]
        self._since = time.perf_counter()

    def curve(self) -> pd.DataFrame:
        """Mean metrics over the examples per recorded iteration, with the total time to get all
        examples there (an example that stopped early keeps its last state)."""
        filled = {name: pd.DataFrame(value).ffill().to_numpy() for name, value in self.values.items()}
        seconds = pd.DataFrame(self.seconds).ffill().to_numpy()
        return pd.DataFrame({"iteration": self.iterations, "time_s": seconds.sum(axis=1),
                             **{name: value.mean(axis=1) for name, value in filled.items()}})


def gradient_descent(problem: InverseProblem, y_target: torch.Tensor, x0: torch.Tensor, iterations: int,
                     lr: float, observe: Observer, observed: Observed = ()) -> torch.Tensor:
    """x_{k+1} = x_k - lr dL/dx_k for every example (all at once: the examples are independent)."""
    x = x0.clone()
    for iteration in range(iterations):
        observe(iteration, x)
        x.requires_grad_(True)
        (gradient,) = torch.autograd.grad(problem.physics_loss(x, y_target, *observed).sum(), x)
        x = (x - lr * gradient).detach()
    observe(iterations, x)
    return x


def lbfgsb(problem: InverseProblem, y_target: torch.Tensor, x0: torch.Tensor, iterations: int,
           observe: Observer, observed: Observed = ()) -> torch.Tensor:
    """scipy's L-BFGS-B on each example's L(x) in float64 with the autograd gradient, for
    `iterations` iterations (no tolerance stops it earlier, as in the authors' script)."""
    solutions = []
    for index in range(len(y_target)):
        example = slice(index, index + 1)
        shape, (target, *known) = x0[example].shape, batch_rows((y_target, *observed), example)

        def as_tensor(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(values, dtype=x0.dtype).reshape(shape).to(x0.device)

        def loss_and_gradient(values: np.ndarray) -> tuple[float, np.ndarray]:
            x = as_tensor(values).requires_grad_(True)
            loss = problem.physics_loss(x, target, *known).sum()
            (gradient,) = torch.autograd.grad(loss, x)
            return loss.item(), gradient.detach().cpu().double().numpy().ravel()

        steps = iter(range(1, iterations + 1))
        observe(0, x0[example], example)
        result = scipy.optimize.minimize(
            loss_and_gradient, x0[example].cpu().double().numpy().ravel(), jac=True, method="L-BFGS-B",
            callback=lambda values: observe(next(steps), as_tensor(values), example),
            options={"maxiter": iterations, "maxfun": 100 * iterations, "ftol": 0.0, "gtol": 0.0},
        )
        solutions.append(as_tensor(result.x))
    return torch.cat(solutions)


def network_prediction(module: InverseProblemModule, y_target: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A trained network's solutions for all examples in one pass, and the seconds it took."""
    module.eval()
    with torch.no_grad():
        start = time.perf_counter()
        x = module.predict(y_target)
        if x.is_cuda:
            torch.cuda.synchronize()
        return x, time.perf_counter() - start


def compare(
    problem: InverseProblem,
    x_true: torch.Tensor | None,
    y_target: torch.Tensor,
    networks: dict[str, InverseProblemModule] | None = None,
    iterations: int = 1000,
    gd_lr: float = 1.0,
    x0: float = 0.0,
    every: int = 10,
    dtype: torch.dtype = torch.float64,
    observed: Observed = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """GD and L-BFGS-B from x0 on every example, and each network, on the same examples (x*, y* and the
    problem's observed inputs).

    Returns:
        (table: one row per method with iterations, mean metrics and time_s for all examples,
         curves: method, iteration, time_s and mean metrics per recorded solver iteration)
    """
    start = torch.full((len(y_target), *problem.x_shape), x0, dtype=dtype, device=y_target.device)
    rows, curves = [], []
    for method, solve in {"GD": partial(gradient_descent, lr=gd_lr), "L-BFGS-B": lbfgsb}.items():
        recorder = Recorder(problem, x_true, y_target, iterations, every, observed)
        solve(problem, y_target, start, iterations, observe=recorder, observed=observed)
        curve = recorder.curve().assign(method=method)
        curves.append(curve)
        rows.append({"method": method, "iterations": iterations,
                     **curve.drop(columns=["method", "iteration"]).iloc[-1].to_dict()})
    for name, module in (networks or {}).items():
        x, seconds = network_prediction(module, y_target)
        with torch.no_grad():
            metrics = problem.metrics(x, x_true, problem.simulate(x, *observed), y_target, *observed)
        rows.append({"method": f"NN {name}", "iterations": None, "time_s": seconds,
                     **{key: float(value.mean()) for key, value in metrics.items()}})
    table = pd.DataFrame(rows)
    return table[["method", "iterations", *[c for c in table.columns if c not in ("method", "iterations", "time_s")],
                  "time_s"]], pd.concat(curves, ignore_index=True)


def figure(table: pd.DataFrame, curves: pd.DataFrame, metric: str = "x_l1") -> plt.Figure:
    """The solvers' mean metric against iterations and against time, the networks as dashed lines."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    networks = table[table["iterations"].isna()]
    for ax, x, label in ((axes[0], "iteration", "iteration"), (axes[1], "time_s", "time for all examples [s]")):
        for method, points in curves.groupby("method", sort=False):
            points = points[points[x] > 0] if x == "time_s" else points
            ax.plot(points[x], points[metric], label=method)
        for index, (_, row) in enumerate(networks.iterrows()):
            ax.axhline(row[metric], ls="--", lw=1, color=f"C{index + 2}", label=row["method"])
        if x == "time_s":
            ax.set_xscale("log")
        log_scale_if_positive(ax, pd.concat([curves[metric], networks[metric]]))
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    legend_outside(fig, axes)
    against = " against trained networks" if len(networks) else ""
    fig.suptitle(f"per-example GD and L-BFGS-B{against}: mean {metric} over the validation examples")
    return fig


def write(table: pd.DataFrame, curves: pd.DataFrame, out_dir: Path, metric: str = "x_l1") -> dict[str, Any]:
    """iterative.csv, iterative.md, iterative_curves.csv and iterative.png (of `metric`) in `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "iterative.csv", index=False)
    curves.to_csv(out_dir / "iterative_curves.csv", index=False)
    (out_dir / "iterative.md").write_text(markdown(table))
    save(figure(table, curves, metric), out_dir / "iterative.png")
    return {"table": table, "csv": out_dir / "iterative.csv", "markdown": out_dir / "iterative.md",
            "figures": [out_dir / "iterative.png"]}


def validation_set(cfg: DictConfig, device: str = "cpu", examples: int | None = None
                   ) -> tuple[InverseProblem, Batch]:
    """The problem and the validation set (x*, y*, *observed) a run with config `cfg` is validated on."""
    problem = instantiate(cfg.problem).to(device)
    data = instantiate(cfg.data, problem=problem, seed=cfg.seed)
    return problem, batch_rows(data.validation_set(torch.device(device)), slice(examples))


def run_config(run_dir: Path) -> DictConfig:
    """The config a run was trained with (its .hydra/config.yaml)."""
    return OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml")


def _validation_identity(cfg: DictConfig) -> Any:
    return OmegaConf.to_container(cfg.problem), cfg.data.val_size, cfg.seed


def compare_runs(runs: dict[str, Path], out_dir: Path, device: str = "cpu", examples: int | None = None,
                 **options: Any) -> dict[str, Any]:
    """`compare` on the validation set of trained runs (label -> run dir), with their networks.

    Raises:
        ValueError: the runs were validated on different examples (problem, val_size or seed differ).
    """
    configs = {label: run_config(run_dir) for label, run_dir in runs.items()}
    identities = {label: _validation_identity(cfg) for label, cfg in configs.items()}
    if len({repr(identity) for identity in identities.values()}) > 1:
        raise ValueError(f"runs {list(runs)} were validated on different examples (problem, data.val_size or seed differ)")
    problem, (x_true, y_target, *observed) = validation_set(next(iter(configs.values())), device, examples)
    networks = {label: InverseProblemModule.load_from_checkpoint(read_summary(run_dir)["last_checkpoint"],
                                                                 map_location=device)
                for label, run_dir in runs.items()}
    return write(*compare(problem, x_true, y_target, networks, observed=tuple(observed), **options), out_dir,
                 problem.primary_metric)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="run directories, or Hydra overrides (key=value) of the validation set")
    parser.add_argument("--iterations", type=int, default=1000, help="solver iterations per example (paper: 1000)")
    parser.add_argument("--gd-lr", type=float, default=1.0, help="gradient descent step size (heat: 1)")
    parser.add_argument("--x0", type=float, default=0.0, help="initial guess of every entry of x")
    parser.add_argument("--every", type=int, default=10, help="record the metrics every N iterations")
    parser.add_argument("--examples", type=int, default=None, help="use only the first N validation examples")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("iterative"), help="output directory")
    args = parser.parse_args(argv)
    runs = [item for item in args.inputs if "=" not in item]
    overrides = [item for item in args.inputs if "=" in item]
    if runs and overrides:
        parser.error("give run directories or overrides, not both: the runs define the validation set")
    options = dict(iterations=args.iterations, gd_lr=args.gd_lr, x0=args.x0, every=args.every)
    if runs:
        result = compare_runs({Path(run).name: Path(run) for run in runs}, args.out, args.device, args.examples, **options)
    else:
        problem, (x_true, y_target, *observed) = validation_set(compose_config(overrides), args.device, args.examples)
        result = write(*compare(problem, x_true, y_target, observed=tuple(observed), **options), args.out,
                       problem.primary_metric)
    print(result["markdown"].read_text())


if __name__ == "__main__":
    main()
