"""Named sweeps: a grid or list of train.py overrides run as Hydra multirun jobs, then one table
and a set of figures for the lot (the paper's figures are such comparisons).

How a sweep runs (`python train.py -m sweep=NAME`, or `python sweep.py sweep=NAME` which also reports):
1. Hydra composes conf/sweep/NAME.yaml into the multirun config; the `sip` sweeper plugin
   (hydra_plugins/sip_sweeper) expands its `sweep:` spec and the command line into jobs
   (`spec.plan`); each job's run directory is <sweep dir>/<job name>, the name being its swept
   `key=value` pairs, so it is the same every time. The plan is saved as <sweep dir>/sweep.yaml.
2. Jobs whose directory holds a finished run (summary.json status completed or diverged) of the
   same overrides are skipped (`spec.is_completed`); a job that failed, was interrupted or never
   ran is run (again), and train.py continues it from its last checkpoint if it has one.
3. The rest go to the launcher chosen with `hydra/launcher=...` (basic, joblib, submitit) with
   train.py's task function: a job that raises or diverges is recorded in its summary.json and
   the others go on.
4. `report.report` reads every job's summary.json and metrics.csv (`results`) into results.csv,
   results.md, curves.csv and PNG figures (`figures`) in the sweep directory, and logs them to
   one W&B run of the sweep's group when W&B is on (`wandb_upload`).

The sweep directory is multirun/<sweep name> unless `hydra.sweep.dir=...` says otherwise.
This package imports nothing itself: the sweeper plugin, loaded by every Hydra start, needs only `spec`.
"""
