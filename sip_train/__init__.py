"""sip-train: train networks on inverse physics problems with SIP, half-inverse gradients or any optimizer.

    from sip_train import train, evaluate, compare
    summary = train(["problem=exp", "optimizer=sip", "trainer.max_steps=200"], run_dir="runs/exp-sip")
    evaluate("runs/exp-sip", ["data.val_size=1024"])["metrics"]
    compare(["runs/exp-sip", "runs/exp-adam"], out_dir="runs")["table"]

The names load their modules on first use, so `import sip_train` stays light (no torch until a run starts).
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {"train": "sip_train.api", "evaluate": "sip_train.evaluation", "compare": "sip_train.comparison"}
__all__ = list(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sip_train' has no attribute {name!r}")
