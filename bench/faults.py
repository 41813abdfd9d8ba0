"""Run the fault-injecting tests and write what each fault did into RELIABILITY.md's "faults" section.

    OMP_NUM_THREADS=1 python bench/faults.py

Each test that injects a fault (a signal at a given moment, a corrupt checkpoint, a changed setting on
resume, a NaN, a failing sweep job, a bad value, a DDP rank mismatch, no network for W&B, resume=false in a
run's directory, a refused start, an edited sweep, a bug in user code, too little memory, Hydra's own errors, float64) records the
outcome it observed through tests/fault_log.py; this script collects those records, so the table
says what the suite saw, not what someone typed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _report import REPO, markdown_table, provenance, write_section

TESTS = ["tests/test_integrity.py", "tests/test_reliability.py", "tests/test_records.py", "tests/test_ddp.py",
         "tests/test_preemption.py", "tests/test_cli.py", "tests/test_precision.py",
         "tests/test_sweep.py::test_an_edited_experiment_runs_its_jobs_again_and_the_report_shows_no_stale_result"]


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = Path(directory) / "faults.jsonl"
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                                env={**os.environ, "SIP_FAULT_LOG": str(log), "OMP_NUM_THREADS": "1",
                                     "WANDB_MODE": "offline"}, capture_output=True, text=True, check=False)
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    outcome = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "no output"
    rows = [[r["fault"], r["moment"].replace("|", "/"), r["outcome"].replace("|", "/"), r["lost"]] for r in records]
    text = "\n".join([
        "## Faults injected by the test suite",
        "",
        *provenance("bench/faults.py"),
        f"- tests: `{' '.join(TESTS)}`: {outcome}",
        "",
        markdown_table(["fault", "when", "observed outcome", "lost"], rows),
    ])
    write_section(REPO / "RELIABILITY.md", "faults", text)
    print(text)
    print("\n".join(line for line in result.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))))
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
