"""The exit status of `train.py`, one per way a run can end, so a scheduler or script can tell them apart.

The same number is written into summary.json as "exit_code" (a sweep records it per job).
"""
from __future__ import annotations

COMPLETED = 0      # trained to the end (or had nothing left to do)
FAILED = 1         # any other failure: an exception during training (Python's own status for one)
CONFIG_ERROR = 2   # a bad configuration value, found before training started
DIVERGED = 3       # training went non-finite; the last finite checkpoint is kept
INTERRUPTED = 4    # stopped by SIGTERM/SIGUSR1/SIGUSR2/Ctrl-C after checkpointing every finished step

