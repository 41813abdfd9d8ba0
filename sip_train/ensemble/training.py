"""`train_ensemble(jobs)`: train several jobs of one problem and rule as one vectorised ensemble, each member
leaving the records its single run (`sip_train.run.train`) would leave."""
from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sip_train import exit_codes
from sip_train.callbacks import DivergedError, Preemption, divergence_check_due
from sip_train.checkpoints import truncate_metrics
from sip_train.ensemble.engine import EnsembleUpdate
from sip_train.ensemble.grouping import check_one_group
from sip_train.ensemble.members import (PRECISION, Member, build_member, device_of, replay_to_wandb, start_error,
                                        start_records)
from sip_train.ensemble.problem import fold_batches, member_rows
from sip_train.ensemble.progress import EnsembleProgress
from sip_train.ensemble.records import MemberCheckpoints
from sip_train.learning_curves import draw_learning_curves
from sip_train.module import updates_in_step
from sip_train.problems.base import Batch, batch_rows
from sip_train.run import _rounded, continue_command, report_divergence
from sip_train.run_directory import holds_run
from sip_train.summary import read_summary, write_summary
from sip_train.validation_figures import method_name, save_validation_figure

log = logging.getLogger(__name__)


class EnsembleRun:
    """The members being trained, their shared update, schedule and per-member records."""

    def __init__(self, members: list[Member], device: torch.device) -> None:
        cfg = members[0].cfg
        self.device = device
        self.max_steps = int(cfg.trainer.max_steps)
        self.val_every = int(cfg.trainer.val_check_interval)
        self.log_every = int(cfg.trainer.get("log_every_n_steps", 50))
        self.check_every = int(cfg.get("divergence_check_every", 10))
        self.updates_per_step = int(cfg.get("updates_per_step", 1))
        self.figure_examples = int(cfg.figure_examples)
        # members with equal problem settings share one problem instance, next to each other in the batch
        shared: dict[str, Any] = {}
        for member in members:
            shared.setdefault(OmegaConf.to_yaml(member.cfg.problem, resolve=True), member.problem)
        self.members = sorted(members, key=lambda m: list(shared).index(OmegaConf.to_yaml(m.cfg.problem, resolve=True)))
        self.physics = [shared[OmegaConf.to_yaml(m.cfg.problem, resolve=True)] for m in self.members]
        self.update = EnsembleUpdate(self.physics, [m.module.network for m in self.members],
                                     [m.module.rule for m in self.members], device,
                                     compile=members[0].module.compile_options)
        self.records = [MemberCheckpoints(m.run_dir, f"val/{m.problem.primary_metric}", m.identity) for m in self.members]
        self.validated: list[dict[str, float]] = [{} for _ in self.members]
        self.reference: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self.step = 0
        self.last_validated = -1
        self.started = time.perf_counter()

    # ---- continuing -------------------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue members from their checkpoints: all of them, at one step (a group resumes together)."""
        saved = [m.saved for m in self.members if m.saved is not None]
        if not saved:
            return
        steps = {checkpoint["global_step"] for checkpoint in saved}
        if len(saved) != len(self.members) or len(steps) != 1:
            raise ValueError("an ensemble continues only members that all stand at the same step; "
                             f"found steps {sorted(steps)} for {len(saved)} of {len(self.members)} members")
        self.step = steps.pop()
        for k, (member, record) in enumerate(zip(self.members, self.records)):
            network = {key.removeprefix("network."): value for key, value in member.saved["state_dict"].items()
                       if key.startswith("network.")}
            self.update.network.load_member_state(k, network)
            self.update.optimizer.load_member_state_dict(k, member.saved["optimizer_states"][0], self.step)
            record.restore(member.saved)
            truncate_metrics(member.run_dir / "metrics.csv", self.step)
            log.info("continuing %s from %s", member.run_dir, member.resume_from)
            member.saved = None

    # ---- records -----------------------------------------------------------------------------------------------
    def checkpoint(self, k: int, phase: str) -> dict[str, Any]:
        """Member k's checkpoint now, in the single-run format."""
        member = self.members[k]
        state = {key: value.detach().clone() for key, value in member.module.state_dict().items()}
        state.update({f"network.{name}": value for name, value in self.update.network.member_state(k).items()})
        return self.records[k].document(self.step, phase, time.perf_counter() - self.started,
                                        {key: value.cpu() for key, value in state.items()},
                                        self.update.optimizer.member_state_dict(k), dict(member.module.hparams))

    def save_last(self, phase: str) -> None:
        for k, record in enumerate(self.records):
            record.save_last(lambda: self.checkpoint(k, phase))

    def log_training(self, result: dict[str, torch.Tensor], batch: Batch, step_ms: float | None) -> None:
        """One row of training metrics per member, computed on its rows of the folded `batch` as its single run
        computes them, read from the device in one transfer."""
        rows = len(batch[1]) // len(self.members)
        names, values = [], []
        for k, member in enumerate(self.members):
            part = member_rows(k, rows)
            x_true, y_target, *observed = batch_rows(batch, part)
            metrics = member.problem.metrics(result["x"][part], x_true, result["y"][part], y_target, *observed)
            row = {"train/objective": member.problem.reduce(result["per_example"][part]),
                   **{f"train/{name}": value.mean() for name, value in metrics.items()}}
            names.append(list(row))
            values.extend(v.detach().float().reshape(()) for v in row.values())
        flat = torch.stack(values).tolist()
        for k, member in enumerate(self.members):
            row = dict(zip(names[k], flat[: len(names[k])]))
            flat = flat[len(names[k]):]
            if step_ms is not None:
                row["time/step_ms"] = step_ms
            member.log_row(row, self.step)

    @torch.no_grad()
    def validate(self, in_fit: bool) -> None:
        """Validate every member on its own validation set (its metrics and reference baselines averaged over
        batches as Lightning does), write its row and figure, and in fit its checkpoints."""
        data = self.members[0].data
        sets = [m.data.validation_set(self.device) for m in self.members]
        sums: list[dict[str, torch.Tensor]] = [{} for _ in self.members]
        counts = torch.tensor(0)
        batches = 0
        for batch, start in enumerate(range(0, data.val_size, data.val_batch_size)):
            folded = fold_batches([batch_rows(s, slice(start, start + data.val_batch_size)) for s in sets])
            x_true, y_target, *observed = folded
            x = self.update.predict(y_target)
            y = self.update.problem.simulate(x, *observed)
            rows = len(y_target) // len(self.members)
            for k, member in enumerate(self.members):
                part = member_rows(k, rows)
                own = batch_rows(folded, part)
                key = (id(member), batch)
                if key not in self.reference:
                    self.reference[key] = member.problem.reference_metrics(*own)
                metrics = {**member.problem.metrics(x[part], own[0], y[part], *own[1:]), **self.reference[key]}
                for name, value in metrics.items():
                    sums[k][name] = sums[k].get(name, torch.tensor(0.0)) + value.mean().cpu() * rows
                if batch == 0:
                    member._figure_batch = batch_rows((x[part], own[0], y[part], *own[1:]),
                                                      slice(self.figure_examples))
            counts = counts + rows
            batches += 1
        for k, member in enumerate(self.members):
            self.validated[k] = {name: float(total / counts) for name, total in sums[k].items()}
            member.log_row({f"val/{name}": value for name, value in self.validated[k].items()}, self.step)
            if self.figure_examples > 0:
                self.figure(member, self.validated[k])
            counts_k = self.records[k].counts
            if in_fit:
                counts_k.fit_val_batches += batches
                counts_k.fit_val_latest = batches
            else:
                counts_k.validate_batches += batches
                counts_k.validate_latest = batches
        self.last_validated = self.step
        if in_fit:
            for k, (member, record) in enumerate(zip(self.members, self.records)):
                score = self.validated[k].get(member.problem.primary_metric)
                if score is not None:
                    record.save_best(self.step, score, lambda: self.checkpoint(k, "fit"))
                record.save_last(lambda: self.checkpoint(k, "fit"))

    def figure(self, member: Member, validated: dict[str, float]) -> None:
        """The member's validation figure, titled and saved as its single run saves it."""
        metric = member.problem.primary_metric
        save_validation_figure(member.problem.figure(*member._figure_batch), member.run_dir, self.step,
                               method_name(member.module.hparams), member.summary.get("inverse"), metric,
                               validated.get(metric))

    def updates_in_step(self) -> int:
        """How many updates the single runs' training step starting at the current step makes."""
        return updates_in_step(self.step, self.updates_per_step, self.val_every, self.max_steps)

    # ---- divergence --------------------------------------------------------------------------------------------
    def drop_diverged(self) -> list[tuple[Member, MemberCheckpoints, dict[str, float], DivergedError]]:
        """Members whose loss, prediction or parameters went non-finite (one device read), removed from the
        ensemble; returns them with their records, latest validation and what diverged when (as a single run
        reports it)."""
        state = torch.stack([self.update.first_bad_step, self.update.parameters_finite().long()]).tolist()
        diverged = [(k, DivergedError(bad, "loss or prediction") if bad >= 0 else
                     DivergedError(self.step, "network parameters"))
                    for k, (bad, finite) in enumerate(zip(*state)) if bad >= 0 or not finite]
        if not diverged:
            return []
        gone = {k for k, _ in diverged}
        keep = [k for k in range(len(self.members)) if k not in gone]
        result = [(self.members[k], self.records[k], self.validated[k], error) for k, error in diverged]
        self.members = [self.members[k] for k in keep]
        self.records = [self.records[k] for k in keep]
        self.validated = [self.validated[k] for k in keep]
        self.physics = [self.physics[k] for k in keep]
        if keep:
            self.update.select(keep, self.physics)
        return result

    # ---- the loop ----------------------------------------------------------------------------------------------
    def fit(self, finish, stop: Preemption) -> None:
        """Train to max_steps; `finish(member, record, validated, status, **extra)` records each member as it ends.
        A signal `stop` caught ends the loop after the step in progress (and its validation) with SIGTERMException."""
        cfg = self.members[0].cfg
        progress = EnsembleProgress(self.max_steps, self.members[0].problem.primary_metric,
                                    bool(cfg.trainer.get("enable_progress_bar", True)))
        if cfg.get("validate_at_start") and self.step == 0:
            self.validate(in_fit=False)
        for k, record in enumerate(self.records):
            if not record.last.exists():
                record.save_last(lambda: self.checkpoint(k, "start"))
        interval_start, interval_step = time.perf_counter(), self.step
        step_ms: float | None = None
        # the single runs' training steps (several updates each, `updates_in_step`): their divergence checks
        # run at a step's end, where due (`divergence_check_due`)
        step_start, step_end = self.step, self.step + self.updates_in_step()
        while self.step < self.max_steps and self.members:
            batch = fold_batches([m.data.train_batch(self.step, self.device) for m in self.members])
            result = self.update.update(self.step + 1, *batch[1:])
            self.step += 1
            if self.step % self.log_every == 0:
                now = time.perf_counter()
                step_ms = 1000 * (now - interval_start) / (self.step - interval_step) if self.step > interval_step else None
                self.log_training(result, batch, step_ms)
                for record in self.records:
                    record.timer.step_times_ms.append(step_ms)
            if self.step == step_end:
                if divergence_check_due(self.step, self.step - step_start, self.check_every, self.val_every,
                                        self.max_steps):
                    for member, record, validated, error in self.drop_diverged():
                        finish(member, record, validated, "diverged", error)
                step_start, step_end = self.step, self.step + self.updates_in_step()
            if self.step % self.val_every == 0 and self.members:
                self.validate(in_fit=True)
                interval_start, interval_step = time.perf_counter(), self.step
            elif self.step % self.log_every == 0:
                interval_start, interval_step = time.perf_counter(), self.step
            progress.after_step(self.step, self.validated, step_ms)
            if stop.received is not None:
                raise SIGTERMException
        if self.members and self.last_validated != self.step:
            self.validate(in_fit=False)
        self.save_last("end")
        for member, record, validated in zip(self.members, self.records, self.validated):
            finish(member, record, validated, "completed")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def train_ensemble(jobs: list[tuple[DictConfig, DictConfig | None]], command: str | None = None) -> list[dict[str, Any]]:
    """Train the jobs (each a composed run config with its run_dir, and the Hydra config of its job or None)
    as one ensemble; returns each job's summary, in order, as `sip_train.run.train` would.

    Jobs refused by the start-up checks record a configuration error (exit code 2) and the others go on;
    jobs that completed before have nothing to do; a member that diverges stops alone (exit code 3).
    SIGTERM, SIGUSR1, SIGUSR2 and Ctrl-C stop all members after the step in progress, each checkpointed and
    recorded as interrupted (exit code 4); `command` (the multirun's) continues them all.
    """
    summaries: list[dict[str, Any] | None] = [None] * len(jobs)
    members: list[Member] = []
    index: dict[int, int] = {}
    for i, (cfg, hydra) in enumerate(jobs):
        earlier_run = holds_run(Path(cfg.run_dir))  # a refused start leaves it as it is
        try:
            member = build_member(cfg, hydra)
        except (ValueError, TypeError, InstantiationException) as error:
            summaries[i] = start_error(cfg, error)
            if not earlier_run:
                write_summary(cfg.run_dir, summaries[i])
            log.error("error: %s: %s", cfg.run_dir, summaries[i]["status"].removeprefix("failed: "))
            continue
        if member.finished:
            log.info("nothing to do: %s already completed %d steps", member.run_dir, member.saved["global_step"])
            summaries[i] = read_summary(member.run_dir)
            continue
        index[id(member)] = i
        members.append(member)
    if not members:
        return summaries
    device = device_of(members[0].cfg)
    check_one_group([m.cfg for m in members])
    run = EnsembleRun(members, device)
    run.restore()
    for member in members:
        start_records(member)
    log.info("ensemble: training %d members of %s/%s together on %s", len(members), members[0].summary["problem"],
             members[0].summary["optimizer"], device.type)

    def finish(member: Member, record: MemberCheckpoints, validated: dict[str, float], status: str,
               diverged: DivergedError | None = None) -> None:
        summary = member.summary
        primary = member.problem.primary_metric
        codes = {"completed": exit_codes.COMPLETED, "diverged": exit_codes.DIVERGED,
                 "interrupted": exit_codes.INTERRUPTED}
        summary.update(status=status, exit_code=codes[status])
        if diverged is not None:
            summary["diverged_step"] = diverged.step
            report_divergence(diverged, member.cfg.optimizer.get("lr"), record.last,
                              continue_command(member.run_dir, member.hydra.hydra if member.hydra else None))
        summary.update(steps=run.step, primary_metric=primary, **{primary: None, "y_l2": None, **validated},
                       metrics_step=run.last_validated if validated else None, accelerator=device.type,
                       device_name=_device_name(device), device_count=1, precision=PRECISION,
                       peak_gpu_memory_mb=torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
                       sessions=record.sessions, wall_time_s=record.earlier_wall_time_s + time.perf_counter() - run.started,
                       **record.timer.statistics(), best_checkpoint=record.callback.best_model_path or None,
                       last_checkpoint=str(record.last) if record.last.exists() else None)
        write_summary(member.run_dir, summary)
        draw_learning_curves(member.run_dir)  # once, as it ends: redrawn at every validation it would cost K plots
        summaries[index[id(member)]] = summary
        log.info("%s/%s: %s after %d steps, val %s = %s (run dir %s)", summary["problem"], summary["optimizer"], status,
                 run.step, primary, _rounded(summary[primary]), member.run_dir)

    threads = members[0].cfg.get("threads")  # not a member's own value: equal for all
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    stop = Preemption()
    stop.install()
    try:
        run.fit(finish, stop)
    except (SIGTERMException, KeyboardInterrupt):  # every finished step of every finite member is checkpointed
        for member, record, validated, error in run.drop_diverged():
            finish(member, record, validated, "diverged", error)
        run.save_last("stop")
        for member, record, validated in zip(run.members, run.records, run.validated):
            finish(member, record, validated, "interrupted")
        log.warning("interrupted at step %d; continue with %s", run.step,
                    command or "the same command (each member alone: train.py with its overrides)")
    finally:
        stop.restore()
        torch.set_num_threads(threads_before)
    for member in members:
        replay_to_wandb(member)
    stop.hand_on()  # under submitit: requeue the job, which continues every member from the checkpoints just saved
    return summaries
