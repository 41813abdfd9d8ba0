"""The host-device synchronisation audit (`sip_train.sync_audit`, CPU stand-in): it counts per update, so steps
of several updates are audited too, it places each call in its phase, and it catches a synchronising call
placed in a training step."""
from __future__ import annotations

import pytest

from sip_train.config import compose_config
from sip_train.sync_audit import ALLOWED, LOG_WRITE, TRAINING, VALIDATION, audit_run


def _config(tmp_path, *overrides: str):
    return compose_config(["logger=csv", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                           "trainer.log_every_n_steps=10", "divergence_check_every=10", "figure_examples=0",
                           "validate_at_start=false", "data.batch_size=8", "data.val_size=8", "data.val_batch_size=8",
                           *overrides], tmp_path)


def _sync_free(tmp_path, *overrides: str, steps: int = 12, terminal: bool = False) -> int:
    """Updates checked in a run with synchronisation forbidden outside log writes, validation and the divergence
    check (after two warm-up updates), the progress bar on a terminal if `terminal`."""
    cfg = _config(tmp_path, f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                  f"trainer.enable_progress_bar={str(terminal).lower()}", *overrides)
    summary, tracker = audit_run(cfg, forbid=True, warmup=2, terminal=terminal)
    assert summary["status"] == "completed"
    return tracker.counts[TRAINING]


def test_steps_of_many_updates_are_checked_update_by_update(tmp_path):
    """exp makes 100 updates per Lightning step: all 12 steps are one Lightning step with log steps inside,
    and every update from the second warm-up step on is checked."""
    assert _sync_free(tmp_path, "problem=exp", "optimizer=adam", "trainer.log_every_n_steps=5",
                      "divergence_check_every=5") == 10


@pytest.mark.parametrize("rule, terminal", [
    (["optimizer=hessian_free", "optimizer.optimizer.cg_max_iter=10"], False),  # host-driven solver, on the device
    (["optimizer=sip", "inverse=lbfgs", "inverse.iterations=2"], True),  # a line search, and the progress bar
    (["optimizer=hig"], True),  # an SVD timed by the step
], ids=["hessian_free", "sip-lbfgs-terminal", "hig-terminal"])
def test_these_rules_train_without_synchronising(tmp_path, rule, terminal):
    """Rules whose steps have host decisions or timings do not wait for the device, with the progress bar off
    and on a terminal; the audit of every rule x problem x mode is bench/sync_audit.py."""
    assert _sync_free(tmp_path, "problem=exp", *rule, "updates_per_step=1", steps=5, terminal=terminal) == 3


def test_a_synchronising_call_in_the_physics_fails_the_check(tmp_path, monkeypatch):
    from sip_train.problems.exp import Exp

    simulate = Exp.simulate
    monkeypatch.setattr(Exp, "simulate", lambda self, x: simulate(self, x) + 0 * float(x.detach().sum()))
    with pytest.raises(RuntimeError, match=r"host-device synchronisation in a training step: Tensor.__float__ "
                                           r"\(device-to-host read\) at tests/test_sync_audit.py"):
        _sync_free(tmp_path, "problem=exp", "optimizer=adam", "updates_per_step=1", steps=4)


def test_a_synchronising_callback_is_named(tmp_path, monkeypatch):
    """A read in a callback's on_train_batch_end (after every step) is charged to that callback, and refused."""
    from sip_train.callbacks import BufferAverage

    monkeypatch.setattr(BufferAverage, "on_train_batch_end", lambda self, trainer, module, outputs, *_:
                        outputs["loss"].sum().item(), raising=False)
    with pytest.raises(RuntimeError, match=r"Tensor.item \(device-to-host read\) at tests/test_sync_audit.py.*"
                                           r"\(BufferAverage\)"):
        _sync_free(tmp_path, "problem=exp", "optimizer=adam", "updates_per_step=1", steps=5)


def test_the_audit_finds_reads_only_in_log_writes_divergence_checks_and_validation(tmp_path):
    cfg = _config(tmp_path, "problem=exp", "optimizer=sip", "trainer.max_steps=12", "trainer.val_check_interval=11",
                  "trainer.log_every_n_steps=5", "divergence_check_every=5", "figure_examples=1")
    summary, tracker = audit_run(cfg)
    rates = tracker.rates()
    assert {LOG_WRITE, "DivergenceGuard", VALIDATION} <= set(rates) <= ALLOWED
    [((operation, site, _), rate)] = rates[LOG_WRITE].items()  # one read per log write: the whole row
    assert operation == "Tensor.tolist (device-to-host read)" and rate == 1.0
    assert site.startswith("sip_train/training_log.py:") and site.endswith("(write)")
