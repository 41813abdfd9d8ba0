"""Run a named sweep (conf/sweep/<name>.yaml) as Hydra multirun jobs of train.py, then write
results.csv, results.md and figures into the sweep directory (multirun/<name>).

    python sweep.py sweep=heat_lr_batch                        # Fig. 11: runs what is not done yet
    python sweep.py sweep=heat_lr_batch hydra/launcher=joblib_1thread hydra.launcher.n_jobs=4
    python sweep.py sweep=heat_lr_batch hydra/launcher=slurm_gpu hydra.launcher.partition=gpu
    python sweep.py sweep=heat_lr_batch trainer.max_steps=500 hydra.sweep.dir=multirun/short
    python sweep.py sweep=heat_lr_batch --report-only          # re-aggregate an existing sweep
    python sweep.py sweep=heat_lr_batch --list                 # the jobs, and which are completed

Other arguments are Hydra overrides: hydra.* ones configure the multirun and its launcher, the
others go to every job. Re-running the same command skips the jobs already completed.
"""
from __future__ import annotations

import argparse
import logging
import sys

from hydra.errors import HydraException

from sip_train.sweep import SweepError, run_sweep


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="sweep=NAME (or sweep=path/to/sweep.yaml) and Hydra overrides")
    parser.add_argument("--report-only", action="store_true", help="aggregate the sweep directory, run nothing")
    parser.add_argument("--list", action="store_true", help="list the jobs and which are completed, run nothing")
    args = parser.parse_args(argv)
    names = [item.split("=", 1)[1] for item in args.overrides if item.startswith("sweep=")]
    if len(names) != 1:
        parser.error("name the sweep once: sweep=NAME (a file in conf/sweep/) or sweep=path/to/sweep.yaml")
    args.sweep = names[0]
    args.overrides = [item for item in args.overrides if not item.startswith("sweep=")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    task_function = None
    if not (args.report_only or args.list):
        from train import main as task_function  # train.py's Hydra task function, run once per job
    try:
        result = run_sweep(args.sweep, args.overrides, task_function, report_only=args.report_only, list_only=args.list)
    except (SweepError, HydraException) as error:  # a bad sweep file or override: one clear message
        sys.exit(f"error: {error}")
    if args.list:
        for job in result["jobs"]:
            print(f"{'completed' if job.name in result['completed'] else 'to run':>9}  {job.name}")
        print(f"sweep directory: {result['sweep_dir']}")
        return
    print(result["markdown"].read_text())
    if result["iterative"]:
        print(result["iterative"]["markdown"].read_text())
    print(f"results and figures in {result['sweep_dir']}")


if __name__ == "__main__":
    main()
