"""The console commands `sip-train`, `sip-sweep`, `sip-eval` and `sip-compare` (train.py and sweep.py in the
repository call the first two). Only Hydra and OmegaConf load before the command line is understood:
torch, Lightning, scipy, wandb and matplotlib load when a run, an evaluation or a report starts, so
`--help`, `--list` and a configuration error answer at once.

Exit status of sip-train (also written into summary.json as "exit_code", see sip_train/exit_codes.py):
0 completed (or nothing left to do), 1 failed during training, 2 configuration error (one line,
before training), 3 diverged (the last finite checkpoint is kept), 4 interrupted or preempted
(SIGTERM, SIGUSR1, SIGUSR2, Ctrl-C: every finished step is checkpointed; rerun to continue).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sip_train import console, exit_codes, resolvers  # noqa: F401 - registers ${run_name:} before Hydra composes
from sip_train.config import CONF
from sip_train.hydra_errors import CONFIG_ERRORS, one_line
from sip_train.summary import job_value

log = logging.getLogger("train")


def fail(message: str) -> NoReturn:
    """A configuration error: one line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(exit_codes.CONFIG_ERROR)


def _train_task(cfg: DictConfig) -> float | None:
    """One job: train and return the primary validation metric (for sweepers such as Optuna)."""
    from sip_train.run import ConfigError, train

    console.silence_known_warnings()
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
    except ConfigError as error:  # a bad configuration value: one clear line, no traceback
        if multirun:
            log.error("error: %s", error)
            return float("nan")  # recorded in the job's summary.json; the other jobs go on
        _remove_if_created(Path(cfg.run_dir))
        fail(str(error))
    except Exception:
        if not multirun:
            raise
        log.exception("job failed; its summary.json records why, the sweep goes on")
        return float("nan")
    if summary["status"] == "completed" or multirun:
        return job_value(summary)
    if summary["status"] == "diverged":
        print(f"error: training diverged at step {summary['diverged_step']}; see {summary['run_dir']}", file=sys.stderr)
    sys.exit(summary["exit_code"])


def _remove_if_created(run_dir: Path) -> None:
    """Remove the run directory of a refused single run if this command created it: a refused start leaves
    nothing behind (a directory that held a run is left as it was by `train`)."""
    from sip_train import hydra_callbacks

    created = hydra_callbacks.new_run_directory
    if created is not None and created[0] == run_dir.absolute():
        logging.shutdown()  # Hydra's log file in it is closed first
        shutil.rmtree(created[1], ignore_errors=True)


train_app = hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")(_train_task)


def run_hydra_app(app: Callable[[], object]) -> None:
    """Run a Hydra app so that Hydra's own configuration errors end as one line and exit status 2, and any
    other error keeps its traceback (exit status 1)."""
    previous = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises instead of printing: the error is ours to word
    try:
        app()
    except CONFIG_ERRORS as error:
        fail(one_line(error))
    finally:
        if previous is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = previous


def train_command() -> None:
    """`sip-train [overrides]`: one run, or a multirun with -m (`sip-train --help`)."""
    run_hydra_app(train_app)


def sweep_names() -> list[str]:
    """The named sweeps that ship with the package (conf/sweep/)."""
    return sorted(path.stem for path in (CONF / "sweep").glob("*.yaml"))


SWEEP_HELP = """\
Run a named sweep as sip-train's multirun, then aggregate it: results.csv, results.md and figures in
the sweep directory (multirun/<name>), and W&B when on.

  sip-sweep sweep=heat_lr_batch                  Fig. 11: runs what is not done yet
  sip-sweep sweep=heat_lr_batch hydra/launcher=joblib_1thread hydra.launcher.n_jobs=4
  sip-sweep sweep=heat_lr_batch hydra/launcher=slurm_gpu hydra.launcher.partition=gpu
  sip-sweep sweep=heat_lr_batch --list           the jobs, and which are completed
  sip-sweep sweep=heat_lr_batch --report-only    re-aggregate an existing sweep

  a smoke test, 2 jobs of 20 steps:
  sip-sweep sweep=heat_lr_batch optimizer.lr=1e-3 data.batch_size=4 trainer.max_steps=20
            hydra.sweep.dir=multirun/smoke

Other arguments are Hydra overrides, exactly as `sip-train -m sweep=NAME ...` takes them (which runs
the same jobs without the report). Re-running the same command skips finished jobs. In the repository,
`python sweep.py` is the same command.

named sweeps: {names}
(your own: a sweep/ folder in a --config-dir or hydra.searchpath folder)
"""


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    """An argument parser whose --help keeps the description's lines and examples as written."""
    return argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _or_fail(error_type: type[Exception], function: Callable[..., dict], *args: object, **kwargs: object) -> dict:
    """`function(*args, **kwargs)`, with its `error_type` (a bad input) ending the command in one line, exit 2."""
    try:
        return function(*args, **kwargs)
    except error_type as error:
        fail(str(error))


def _sweep_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    from sip_train.sweep.spec import override_key, sweep_directory

    parser = _parser("sip-sweep", SWEEP_HELP.format(names=", ".join(sweep_names())))
    parser.add_argument("overrides", nargs="*", help="sweep=NAME (a named sweep, see below) and Hydra overrides")
    parser.add_argument("--report-only", action="store_true", help="aggregate the sweep directory, run nothing")
    parser.add_argument("--list", action="store_true", help="list the jobs and which are completed, run nothing")
    args = parser.parse_intermixed_args(argv)
    names = [item.split("=", 1)[1] for item in args.overrides if override_key(item) == "sweep"]
    if len(names) != 1:
        parser.error(f"name the sweep once: sweep=NAME, one of {', '.join(sweep_names())}")
    args.sweep = names[0]
    given = [item.split("=", 1)[1].strip("'\"") for item in args.overrides if override_key(item) == "hydra.sweep.dir"]
    args.sweep_dir = sweep_directory(args.sweep, given[-1] if given else None)
    return args


def _package_on_path() -> dict[str, str]:
    """The environment for a sip-train subprocess that finds this sip_train, installed or not."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path]) if path else root}


def sweep_command(argv: Sequence[str] | None = None) -> None:
    """`sip-sweep sweep=NAME [overrides] [--list | --report-only]`: run a named sweep, then its report."""
    args = _sweep_arguments(argv)
    if not args.report_only:
        dry_run = ["hydra.sweeper.dry_run=true"] if args.list else []
        command = [sys.executable, "-m", "sip_train.cli", "-m", *args.overrides, *dry_run]
        code = subprocess.run(command, env=_package_on_path()).returncode
        if code:  # sip-train has printed why (a bad override, a sweep file error)
            sys.exit(code)
    if args.list:
        return
    from sip_train.sweep.report import report
    from sip_train.sweep.spec import SweepError

    try:
        result = report(args.sweep_dir)
    except SweepError as error:
        sys.exit(f"error: {error}")
    print(result["markdown"].read_text())
    if result["iterative"]:
        print(result["iterative"]["markdown"].read_text())
    print(f"results and figures in {args.sweep_dir}")


def eval_command(argv: Sequence[str] | None = None) -> None:
    """`sip-eval <run dir or checkpoint> [overrides]`: the trained network on its validation set, or another."""
    parser = _parser(
        "sip-eval",
        "Evaluate a trained network on its run's validation set (the numbers of its final validation)\n"
        "or, with overrides of problem and data parameters that keep the shapes, on another one:\n\n"
        "  sip-eval outputs/heat-sip/...                      the run's own validation set\n"
        "  sip-eval outputs/heat-sip/... problem.noise=0.2 data.val_size=1024 seed=7\n"
        "  sip-eval outputs/heat-sip/.../checkpoints/best-step400.ckpt\n\n"
        "Metrics are printed and written with figures into <run dir>/eval/<name>/.")
    parser.add_argument("target", help="a run directory (its last checkpoint) or a checkpoint file")
    parser.add_argument("overrides", nargs="*", help="key=value: problem.*, data.*, seed, figure_examples")
    parser.add_argument("--name", help="the folder under <run dir>/eval/ (default: the overrides, or 'val')")
    args = parser.parse_intermixed_args(argv)
    from sip_train.evaluation import EvaluationError, evaluate

    result = _or_fail(EvaluationError, evaluate, args.target, args.overrides, name=args.name)
    width = max(map(len, result["metrics"]))
    for key, value in result["metrics"].items():
        print(f"{key:<{width}}  {value:.6g}")
    print(f"metrics and figures in {result['eval_dir']}")


def compare_command(argv: Sequence[str] | None = None) -> None:
    """`sip-compare <dir>...`: one table and overlaid learning curves for runs, multiruns and sweeps."""
    parser = _parser(
        "sip-compare",
        "Compare run directories, multirun directories and sweep directories: one table row per\n"
        "configuration (mean, std and count over seeds; final and best primary metric, steps, median\n"
        "step time) as comparison.md and comparison.csv, and comparison.png (validation curves\n"
        "against steps and against training wall-clock).\n\n"
        "  sip-compare multirun/2026-01-02_03-04-05\n"
        "  sip-compare outputs/heat-adam/... outputs/heat-sip/... --out compare/heat")
    parser.add_argument("dirs", nargs="+", help="run, multirun or sweep directories")
    parser.add_argument("--out", help="where the table and figure go (default: the one directory given, else .)")
    parser.add_argument("--metric", help="the validation metric compared (default: the runs' primary metric)")
    args = parser.parse_args(argv)
    from sip_train.comparison import ComparisonError, compare

    result = _or_fail(ComparisonError, compare, args.dirs, out_dir=args.out, metric=args.metric)
    print(result["markdown"].read_text())
    print(f"table and curves in {result['out_dir']}")


if __name__ == "__main__":  # `python -m sip_train.cli`: what sip-sweep runs its jobs with
    train_command()
