"""Shared helpers of the benchmark scripts: timing, machine description, BENCHMARKS.md sections."""
from __future__ import annotations

import datetime
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def median_ms(kernel: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall-clock time of kernel() in milliseconds over `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        kernel()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        kernel()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def cpu_model() -> str:
    """CPU model name from lscpu, else platform.processor()."""
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        found = re.search(r"^Model name:\s*(.+)$", listing, re.MULTILINE)
        if found:
            return found.group(1).strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """One line naming the device this process computes on (GPU name, else the CPU model and cores)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), host {cpu_model()}"
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs ({platform.platform()})"


def provenance(script: str) -> list[str]:
    """Markdown bullet lines: the exact command, machine, torch threads and version, date."""
    return [
        f"- command: `python {script} {shlex.join(sys.argv[1:])}`",
        f"- machine: {machine()}",
        f"- torch threads: {torch.get_num_threads()}; torch {torch.__version__}; "
        f"load average when written (1/5/15 min, other processes included): "
        + "/".join(f"{load:.1f}" for load in os.getloadavg()),
        f"- date: {datetime.date.today().isoformat()}",
    ]


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; floats are printed with 4 significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(path: Path, name: str, text: str) -> None:
    """Put `text` between the <!-- name:start --> / <!-- name:end --> markers of `path`,
    replacing an earlier section of that name or appending one (creating the file if absent)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: block, old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "") + block
    path.write_text(new.rstrip("\n") + "\n")


def publish(text: str, path: Path | None, name: str) -> None:
    """Print a benchmark's section and, if `path` is given, write it as section `name` of that file."""
    print(text)
    if path is not None:
        write_section(path, name, text)
        print(f"wrote section to {path}")
