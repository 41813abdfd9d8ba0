"""Run a named sweep (conf/sweep/<name>.yaml) as train.py's Hydra multirun, then aggregate it:
results.csv, results.md and figures in the sweep directory (multirun/<name>), and W&B when on.

    python sweep.py sweep=heat_lr_batch                        # Fig. 11: runs what is not done yet
    python sweep.py sweep=heat_lr_batch hydra/launcher=joblib_1thread hydra.launcher.n_jobs=4
    python sweep.py sweep=heat_lr_batch hydra/launcher=slurm_gpu hydra.launcher.partition=gpu
    python sweep.py sweep=heat_lr_batch optimizer.lr=1e-3 data.batch_size=4 trainer.max_steps=20 \
        hydra.sweep.dir=multirun/smoke                         # a smoke test: 2 jobs of 20 steps
    python sweep.py sweep=heat_lr_batch --report-only          # re-aggregate an existing sweep
    python sweep.py sweep=heat_lr_batch --list                 # the jobs, and which are completed

Other arguments are Hydra overrides, exactly as `python train.py -m sweep=NAME ...` takes them
(which runs the same jobs without the report). Re-running the same command skips finished jobs.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from sip_train.sweep.report import report
from sip_train.sweep.spec import SweepError, override_key, sweep_directory

TRAIN = Path(__file__).resolve().with_name("train.py")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="sweep=NAME (a config of conf/sweep/ or of a hydra.searchpath "
                                                     "folder's sweep/) and Hydra overrides")
    parser.add_argument("--report-only", action="store_true", help="aggregate the sweep directory, run nothing")
    parser.add_argument("--list", action="store_true", help="list the jobs and which are completed, run nothing")
    args = parser.parse_intermixed_args(argv)
    names = [item.split("=", 1)[1] for item in args.overrides if override_key(item) == "sweep"]
    if len(names) != 1:
        parser.error("name the sweep once: sweep=NAME (a file in conf/sweep/)")
    args.sweep = names[0]
    given = [item.split("=", 1)[1].strip("'\"") for item in args.overrides if override_key(item) == "hydra.sweep.dir"]
    args.sweep_dir = sweep_directory(args.sweep, given[-1] if given else None)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    if not args.report_only:
        dry_run = ["hydra.sweeper.dry_run=true"] if args.list else []
        code = subprocess.run([sys.executable, str(TRAIN), "-m", *args.overrides, *dry_run]).returncode
        if code:  # Hydra has printed why (a bad override, a sweep file error)
            sys.exit(code)
    if args.list:
        return
    try:
        result = report(args.sweep_dir)
    except SweepError as error:
        sys.exit(f"error: {error}")
    print(result["markdown"].read_text())
    if result["iterative"]:
        print(result["iterative"]["markdown"].read_text())
    print(f"results and figures in {args.sweep_dir}")


if __name__ == "__main__":
    main()
