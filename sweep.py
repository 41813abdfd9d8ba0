"""Run a named sweep and write its report: `python sweep.py sweep=heat_lr_batch` (in the repository;
installed, `sip-sweep sweep=heat_lr_batch`). `python sweep.py --help` lists the sweeps and the options."""
from sip_train.cli import sweep_command as main

if __name__ == "__main__":
    main()
