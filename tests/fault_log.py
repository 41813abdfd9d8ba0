"""Record each fault a test injects and what was observed, for RELIABILITY.md (see bench/faults.py).

Appends one JSON line per fault to the file named by $SIP_FAULT_LOG; does nothing when it is unset,
so an ordinary test run is unaffected.
"""
from __future__ import annotations

import json
import os


def record(fault: str, moment: str, outcome: str, lost: str) -> None:
    """Note that `fault` was injected at `moment`, what the run did (`outcome`) and what it lost."""
    path = os.environ.get("SIP_FAULT_LOG")
    if path:
        with open(path, "a") as file:
            file.write(json.dumps({"fault": fault, "moment": moment, "outcome": outcome, "lost": lost}) + "\n")
