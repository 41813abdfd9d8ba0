"""The host-device synchronisation audit of bench/ (CPU stand-in): it counts per update, so steps of several
updates are audited too, and it catches a synchronising call placed in a training step."""
from __future__ import annotations

import argparse
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import _sync_audit  # noqa: E402

ARGS = argparse.Namespace(device="cpu", progress_bar=False, threads=1, seed=0)


def test_steps_of_many_updates_are_checked_update_by_update():
    """exp makes 100 updates per Lightning step: all 40 steps are one Lightning step with log steps inside,
    and every update from the second warm-up step on is checked."""
    assert _sync_audit.assert_sync_free("exp", "adam", None, 8, ARGS, 40) == 38


def test_a_synchronising_call_in_the_physics_fails_the_check(monkeypatch):
    from sip_train.problems.exp import Exp

    simulate = Exp.simulate
    monkeypatch.setattr(Exp, "simulate", lambda self, x: simulate(self, x) + 0 * float(x.detach().sum()))
    with pytest.raises(RuntimeError, match=r"host-device synchronisation in a training step: Tensor.__float__ "
                                           r"\(device-to-host read\) at tests/test_sync_audit.py"):
        _sync_audit.assert_sync_free("exp", "adam", None, 8, ARGS, 40)


def test_the_audit_finds_reads_only_in_log_writes_divergence_checks_and_validation():
    rates = _sync_audit.audit_configuration("exp", "sip", None, 8, ARGS)
    assert set(rates) == {"log write", "divergence check", "validation and checkpoint"}
    [((operation, site, _), rate)] = rates["log write"].items()  # one read per log write: the whole row
    assert operation == "Tensor.tolist (device-to-host read)" and rate == 1.0
    assert site.startswith("sip_train/module.py:") and site.endswith("(_log_training)")
