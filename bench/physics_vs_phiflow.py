"""Speed of our pure-torch physics kernels against PhiFlow 3.4, the simulator of the paper.

Times, after warm-up, the median wall-clock of each kernel on one batch of noise fields
(B, H, W) on the CPU: the Laplacian, the Poisson solve (our DST-I and CG against PhiFlow's CG,
both CG at the paper's rel_tol 1e-5 from x0 = 0), periodic Fourier diffusion (amount 8) and one
step of the fluid problem (MacCormack self-advection, pressure projection, energy rescaling,
MacCormack marker advection) from a sampled fluid state. PhiFlow is called as in the authors'
scripts (tum-pbs/SIP poisson/train_poisson.py, heat/train_heat.py, fluid/fluid_base.py).

    python bench/physics_vs_phiflow.py --resolution 64 --batch 128 --repeats 5 --threads 1 \\
        --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import torch
from phi.physics import fluid as phi_fluid
from phi.torch.flow import (
    Box, CenteredGrid, Solve, StaggeredGrid, advect, batch, diffuse, dual, extrapolation, field, math, spatial,
)
from phiml.math import ConvergenceException

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import median_ms, provenance, write_section  # noqa: E402
from sip_train.physics import diffuse as heat  # noqa: E402
from sip_train.physics import fluid  # noqa: E402
from sip_train.physics import poisson  # noqa: E402
from sip_train.physics.noise import smooth_noise  # noqa: E402

REL_TOL = 1e-5
AMOUNT = 8.0
FLUID_DT = fluid.DURATION / fluid.STEPS
PRESSURE_ABS_TOL = 1e-4  # the authors' Solve('CG', 0, 1e-4) of fluid_base.py
#: PhiFlow pressure solves tried in turn for the fluid row, (method, float bits): the authors' CG first.
PRESSURE_SOLVES = (("CG", 32), ("CG", 64), ("scipy-CG", 64), ("biCG-stab(2)", 64))


def phiflow_grid(values: torch.Tensor, boundary) -> CenteredGrid:
    """The authors' `CenteredGrid(..., x=W, y=H)` holding our (B, H, W) values (kept in (x, y) order)."""
    tensor = math.tensor(values.transpose(-2, -1), batch("batch"), spatial("x,y"))
    return CenteredGrid(tensor, boundary, x=values.shape[-1], y=values.shape[-2])


def kernels(x: torch.Tensor) -> list[tuple[str, Callable[[], object], Callable[[], object]]]:
    """(name, ours, PhiFlow's) for each kernel, all acting on the same fields x (B, H, W)."""
    zero_grid, periodic_grid = phiflow_grid(x, 0), phiflow_grid(x, extrapolation.PERIODIC)

    def phiflow_cg():
        return field.solve_linear(field.laplace, zero_grid, Solve("CG", REL_TOL, 0, x0=zero_grid * 0))

    return [
        ("Laplacian (5-point, zero boundary)", lambda: poisson.laplace(x), lambda: field.laplace(zero_grid)),
        ("Poisson solve: our DST-I vs PhiFlow CG 1e-5", lambda: poisson.solve_spectral(x), phiflow_cg),
        ("Poisson solve: our CG 1e-5 vs PhiFlow CG 1e-5", lambda: poisson.solve_cg(x, REL_TOL), phiflow_cg),
        (
            f"Heat: periodic Fourier diffusion, amount {AMOUNT:g}",
            lambda: heat.fourier(x, AMOUNT),
            lambda: diffuse.fourier(periodic_grid, AMOUNT, 1),
        ),
    ]


def phiflow_fluid_step(
    velocity: StaggeredGrid, marker: CenteredGrid, solve: Solve
) -> tuple[StaggeredGrid, CenteredGrid]:
    """The authors' `physics_step` (fluid_base.py) in PhiFlow 3.4: MacCormack self-advection,
    `make_incompressible`, rescaling to the energy before the step, MacCormack marker advection."""
    initial_energy = field.mean(velocity**2)
    velocity = advect.mac_cormack(velocity, velocity, FLUID_DT)
    velocity, _ = phi_fluid.make_incompressible(velocity, solve=solve)
    velocity = velocity * math.sqrt(initial_energy / field.mean(velocity**2))
    return velocity, advect.mac_cormack(marker, velocity, FLUID_DT)


def fluid_step_kernels(
    n: int, resolution: int, seed: int = 0
) -> tuple[str, Callable[[], object], Callable[[], object]]:
    """(name, ours, PhiFlow's) for one fluid step from n sampled states (v0 made divergence-free, m0).

    PhiFlow's pressure solve is the first of PRESSURE_SOLVES that converges on this batch; both
    libraries then run in its precision.
    """
    failures = []
    for method, bits in PRESSURE_SOLVES:
        dtype = torch.float32 if bits == 32 else torch.float64
        v0, m0, _ = fluid.sample(n, torch.Generator().manual_seed(seed), resolution, dtype=dtype)
        velocity = fluid.make_incompressible(fluid.centered_to_staggered(v0))
        box = Box(x=(0, fluid.DOMAIN_SIZE), y=(0, fluid.DOMAIN_SIZE))
        with math.precision(bits):
            values = math.tensor(velocity.transpose(-1, -2), batch("batch"), dual(vector="x,y"), spatial("x,y"))
            velocity_grid = StaggeredGrid(values, extrapolation.PERIODIC, bounds=box)
            marker_values = math.tensor(m0.squeeze(1).transpose(-1, -2), batch("batch"), spatial("x,y"))
            marker_grid = CenteredGrid(marker_values, extrapolation.PERIODIC, bounds=box)
            solve = Solve(method, 0, PRESSURE_ABS_TOL, max_iterations=1000, rank_deficiency=1)
            try:
                phiflow_fluid_step(velocity_grid, marker_grid, solve)
            except ConvergenceException as error:
                failures.append(f"{method} float{bits}: {type(error).__name__}")
                continue

        def theirs(velocity_grid=velocity_grid, marker_grid=marker_grid, solve=solve, bits=bits):
            with math.precision(bits):
                return phiflow_fluid_step(velocity_grid, marker_grid, solve)

        tried = f"; failed first: {', '.join(failures)}" if failures else ""
        name = (f"One fluid step: ours (FFT projection) vs PhiFlow ({method} abs_tol {PRESSURE_ABS_TOL:g}), "
                f"float{bits}{tried}")
        dx = fluid.DOMAIN_SIZE / resolution
        return name, lambda: fluid.step(velocity, m0, FLUID_DT, dx), theirs
    raise RuntimeError(f"no PhiFlow pressure solve converged: {failures}")


def table(rows: list[tuple[str, float, float]]) -> str:
    """Markdown table of (kernel, ours ms, PhiFlow ms) with the speed-up PhiFlow / ours."""
    lines = ["| kernel | ours (ms) | PhiFlow (ms) | speed-up |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {ours:.3f} | {theirs:.3f} | {theirs / ours:.1f}x |" for name, ours, theirs in rows]
    return "\n".join(lines)


def section(markdown_table: str, args: argparse.Namespace) -> str:
    """The marked BENCHMARKS.md section: table, command, machine, threads, versions, date."""
    import phi

    return "\n".join(
        [
            "## Physics kernels: ours vs PhiFlow",
            "",
            f"{args.batch} noise fields of {args.resolution}x{args.resolution} cells, float{args.precision}, CPU; "
            f"median of {args.repeats} calls after warm-up. Speed-up = PhiFlow time / our time. "
            "PhiFlow's CG is called as in the authors' scripts, with `field.laplace` as a Python function "
            "evaluated on Fields every iteration (no `jit_compile_linear`). The fluid row advances "
            f"{args.batch} sampled states of the fluid problem ({args.resolution}x{args.resolution} cells on the "
            "128x128 periodic domain, dt 0.25) by one step; PhiFlow's pressure solve is the first of "
            f"{', '.join(f'{m} float{b}' for m, b in PRESSURE_SOLVES)} that converges on the batch "
            "(Φ-ML's own CG stops with `Diverged` after 8 iterations on these advected velocities, in float32 "
            "and float64 alike), and both libraries run in that precision. PhiFlow 3.4's MacCormack clamps "
            "staggered components on a shifted stencil (see tests/test_fluid_physics.py), so the two steps "
            "agree in cost, not to round-off.",
            "",
            markdown_table,
            "",
            *provenance("bench/physics_vs_phiflow.py"),
            f"- phiflow {phi.__version__}",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64, help="cells per axis")
    parser.add_argument("--batch", type=int, default=128, help="fields per call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per kernel (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--precision", type=int, choices=(32, 64), default=32, help="float bits, both libraries")
    parser.add_argument("--no-fluid", action="store_true", help="skip the (slow) fluid-step row")
    parser.add_argument("--write", type=Path, help="Markdown file whose marked section receives the results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = torch.float32 if args.precision == 32 else torch.float64
    generator = torch.Generator().manual_seed(0)
    x = smooth_noise(args.batch, (args.resolution, args.resolution), generator, dtype=dtype)
    timings: dict[Callable[[], object], float] = {}  # PhiFlow's CG serves two rows; time it once

    def measure(kernel: Callable[[], object]) -> float:
        if kernel not in timings:
            timings[kernel] = median_ms(kernel, args.repeats)
        return timings[kernel]

    with math.precision(args.precision):
        rows = [(name, measure(ours), measure(theirs)) for name, ours, theirs in kernels(x)]
    if not args.no_fluid:
        name, ours, theirs = fluid_step_kernels(args.batch, args.resolution)
        rows.append((name, measure(ours), measure(theirs)))
    markdown = table(rows)
    print(markdown)
    if args.write is not None:
        write_section(args.write, "physics_vs_phiflow", section(markdown, args))
        print(f"wrote section to {args.write}")


if __name__ == "__main__":
    main()
