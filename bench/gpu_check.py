"""GPU check: poisson and heat with sip and adam for a few hundred steps at the paper's size on the GPU
(`trainer=gpu`), plus `trainer=ddp` on every GPU when there is more than one. Runs the real command line.

    python bench/gpu_check.py --steps 300 --write BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import REPO, markdown_table, provenance, write_section  # noqa: E402


def run(problem: str, rule: str, trainer: str, steps: int, run_dir: Path) -> dict:
    """One `python train.py` run; returns its summary.json (status records any failure)."""
    command = [sys.executable, "train.py", f"problem={problem}", f"optimizer={rule}", f"trainer={trainer}",
               f"trainer.max_steps={steps}", "logger=csv", "trainer.enable_progress_bar=false",
               f"hydra.run.dir={run_dir}"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        return {"status": f"no summary (exit {result.returncode}): {result.stderr.strip().splitlines()[-1:]}"}
    return json.loads(summary_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--write", type=Path, help="Markdown file whose `gpu_check` section receives the results")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU visible; this check needs one")
    trainers = ["gpu"] + (["ddp"] if torch.cuda.device_count() > 1 else [])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for trainer in trainers:
            for problem in ("poisson", "heat"):
                for rule in ("adam", "sip"):
                    s = run(problem, rule, trainer, args.steps, Path(scratch) / f"{trainer}-{problem}-{rule}")
                    rows.append([trainer, problem, rule, s.get("status"), s.get("steps"), s.get("step_time_ms_median"),
                                 s.get("x_l1"), s.get("peak_gpu_memory_mb")])
    table = markdown_table(["trainer", "problem", "rule", "status", "steps", "median step (ms)", "val x_l1",
                            "peak GPU memory (MiB)"], rows)
    text = "\n".join(["## GPU check", "", f"Paper size (64x64, batch 128), {args.steps} steps per run, "
                      f"{torch.cuda.device_count()} GPU(s).", "", table, "", *provenance("bench/gpu_check.py")])
    print(text)
    if args.write is not None:
        write_section(args.write, "gpu_check", text)
    if any(row[3] != "completed" for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
