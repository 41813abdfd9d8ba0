"""What a run prints: what runs (once), progress in steps (a bar on a terminal, plain lines otherwise, also
after a resume), and none of the known-harmless third-party warnings, which are silenced by name only."""
from __future__ import annotations

import logging
import re
import sys
import warnings
from types import SimpleNamespace

import pandas as pd
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero
from lightning.pytorch.utilities._pytree import _tree_flatten

from sip_train import console
from sip_train.progress import StepLines
from sip_train.run import train

RUN = ["problem=exp", "optimizer=adam", "trainer.enable_progress_bar=true", "trainer.val_check_interval=2",
       "figure_examples=0"]


def test_known_warnings_are_silenced_by_name_and_others_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.silence_known_warnings()
        _tree_flatten(1.0)  # Lightning's helper builds torch's deprecated LeafSpec
        warnings.warn("some other deprecation", FutureWarning)
    assert [str(w.message) for w in caught] == ["some other deprecation"]


def test_lightning_advertising_and_device_lines_are_dropped_other_info_kept():
    lines = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger(rank_zero.__name__)
    logger.addHandler(handler)
    try:
        console.silence_known_warnings()
        rank_zero.rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org)")
        rank_zero.rank_zero_info("GPU available: False, used: False")
        rank_zero.rank_zero_info("Restored all states from the checkpoint at last.ckpt")
        rank_zero.rank_zero_info("Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2")
    finally:
        logger.removeHandler(handler)
    assert lines == ["Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2"]


def test_off_a_terminal_progress_is_a_line_per_step_interval_and_counts_on_after_a_resume(tiny_config, capsys,
                                                                                        caplog, tmp_path):
    with caplog.at_level(logging.INFO, logger="sip_train.run"):
        train(tiny_config(*RUN, "trainer.max_steps=4", "updates_per_step=1"))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["step 1/4", "step 2/4", "step 3/4", "step 4/4"]
    assert re.fullmatch(r"step 4/4  val x_l1 [0-9.e+-]+  step time \d+ ms", lines[-1])
    metrics = pd.read_csv(tmp_path / "metrics.csv").dropna(subset=["val/x_l1"]).set_index("step")["val/x_l1"]
    shown = {int(line.split()[1].split("/")[0]): float(line.split()[4]) for line in lines}
    assert shown == pytest.approx({1: metrics[0], 2: metrics[2], 3: metrics[2], 4: metrics[4]}, rel=1e-3)  # the latest
    banners = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training ")]
    assert len(banners) == 1 and re.fullmatch(r"training exp with adam \(mlp network\) on cpu .*; run directory .+",
                                              banners[0])
    train(tiny_config(*RUN, "trainer.max_steps=6", "updates_per_step=1"))  # the same run directory: from step 4
    assert [line.split("  ")[0] for line in capsys.readouterr().out.splitlines()] == ["step 5/6", "step 6/6"]


def test_on_a_terminal_the_bar_counts_steps_done_of_the_total_after_a_resume(tiny_config, capsys, monkeypatch):
    train(tiny_config(*RUN, "trainer.max_steps=2", "trainer.enable_progress_bar=false"))
    capsys.readouterr()
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    train(tiny_config(*RUN, "trainer.max_steps=4"))
    bar = capsys.readouterr().out
    assert "steps" in bar and "4/4" in bar and "val x_l1=" in bar
    assert not re.search(r"\b[01]/4\b", bar)  # resumed at step 2: it never shows fewer steps done


def test_on_a_terminal_the_progress_reads_the_device_only_at_validations(tiny_config, capsys, monkeypatch):
    """Lightning's callback_metrics hold device tensors: reading one waits for the device. 8 steps validated
    at 2, 4, 6 and 8 (and 0) may read them a bounded number of times per validation, never per step."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    reads = []
    metrics = Trainer.callback_metrics
    monkeypatch.setattr(Trainer, "callback_metrics", property(lambda self: reads.append(1) or metrics.fget(self)))
    train(tiny_config(*RUN, "trainer.max_steps=8", "updates_per_step=1"))
    assert "8/8" in capsys.readouterr().out and 0 < len(reads) <= 2 * 5


def test_off_a_terminal_a_line_whenever_a_step_of_several_updates_reaches_the_interval(capsys):
    """Lightning steps of 3 updates (steps end at 3, 6, 9, 10) with a line every 4 steps: lines where a
    step's updates passed 4 and 8, and at the end."""
    lines = StepLines(every_n_steps=4)
    trainer = SimpleNamespace(global_step=0, max_steps=10, is_global_zero=True, callbacks=[], callback_metrics={})
    for end in (3, 6, 9, 10):
        lines.on_train_batch_start(trainer, None, None, 0)
        trainer.global_step = end
        lines.on_train_batch_end(trainer, None, None, None, 0)
    lines.on_train_end(trainer, None)
    assert capsys.readouterr().out.splitlines() == ["step 6/10", "step 9/10", "step 10/10"]
