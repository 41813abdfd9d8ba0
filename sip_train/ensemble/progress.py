"""Progress of an ensemble on the console, as a single run's plain progress lines: steps, step time and
member-updates per second, and the best and worst member's latest validation. It shows host values only
(the validations and step times the ensemble has already read), so showing it never waits for the device."""
from __future__ import annotations

from sip_train.progress import LINES_PER_RUN


class EnsembleProgress:
    """One line every `max_steps / LINES_PER_RUN` steps and at the last step, printed after that step's
    validation (if it has one), so the line shows it."""

    def __init__(self, max_steps: int, primary_metric: str, enabled: bool = True) -> None:
        self.max_steps = max_steps
        self.primary_metric = primary_metric
        self.enabled = enabled
        self.every = max(1, max_steps // LINES_PER_RUN)

    def line(self, step: int, validated: list[dict[str, float]], step_ms: float | None) -> str:
        """The progress line at `step` of an ensemble whose members' latest validations are `validated`."""
        parts = [f"step {step}/{self.max_steps}", f"{len(validated)} member" + "s" * (len(validated) != 1)]
        scores = [v[self.primary_metric] for v in validated if self.primary_metric in v]
        if scores:
            parts.append(f"val {self.primary_metric} best {min(scores):.4g} worst {max(scores):.4g}")
        if step_ms:
            parts.append(f"step time {step_ms:.3g} ms ({1000 * len(validated) / step_ms:.0f} member-updates/s)")
        return "  ".join(parts)

    def after_step(self, step: int, validated: list[dict[str, float]], step_ms: float | None) -> None:
        if self.enabled and validated and (step % self.every == 0 or step == self.max_steps):
            print(self.line(step, validated, step_ms), flush=True)
