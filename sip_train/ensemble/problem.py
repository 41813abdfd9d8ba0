"""The members' problems folded into one: a batch of K * B examples, member k's in rows k*B ... (k+1)*B - 1
(its observed inputs too, passed to each member's physics with its rows).

Physics, losses and inverse updates work per example, so the members that share a problem instance are
simulated in one call on their rows; members whose declared problem parameters differ get one call per
distinct instance. Rules and inverse solvers see one problem and one batch.
"""
from __future__ import annotations

from typing import Callable

import torch

from sip_train.problems.base import Batch, InverseProblem, batch_rows


class FoldedProblem(InverseProblem):
    """K members' problems as one problem on K * B examples (B per member, in member order).

    Args:
        problems: each member's problem, in member order; members that share an instance (equal
            configuration) are simulated together, so consecutive members should share where they can.
    """

    def __init__(self, problems: list[InverseProblem]) -> None:
        super().__init__(problems[0].batch_reduction)
        self.members = len(problems)
        self.segments: list[tuple[InverseProblem, int, int]] = []  # (problem, first member, end member)
        for k, problem in enumerate(problems):
            if self.segments and self.segments[-1][0] is problem:
                self.segments[-1] = (problem, self.segments[-1][1], k + 1)
            else:
                self.segments.append((problem, k, k + 1))
        self.first = problems[0]
        self.x_shape, self.y_shape = self.first.x_shape, self.first.y_shape
        self.primary_metric = self.first.primary_metric

    def _rows(self, n: int) -> list[tuple[InverseProblem, slice]]:
        """Each distinct problem with its rows among n folded rows (all of them for a shared problem; a
        probe on fewer rows than members, e.g. a solver testing one example, goes to the first)."""
        if len(self.segments) == 1 or n % self.members:
            return [(self.first, slice(0, n))]
        per_member = n // self.members
        return [(problem, slice(first * per_member, end * per_member)) for problem, first, end in self.segments]

    def _each(self, method: Callable[[InverseProblem], Callable], *tensors: torch.Tensor):
        """Call a per-example method of each member's problem on its rows and concatenate (tuples: each part)."""
        parts = [method(problem)(*batch_rows(tensors, rows)) for problem, rows in self._rows(len(tensors[0]))]
        if len(parts) == 1:
            return parts[0]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(column) for column in zip(*parts))
        return torch.cat(parts)

    def simulate(self, x: torch.Tensor, *observed: torch.Tensor) -> torch.Tensor:
        return self._each(lambda p: p.simulate, x, *observed)

    def y_loss(self, y: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return self._each(lambda p: p.y_loss, y, y_target)

    def inverse_update(self, x: torch.Tensor, y: torch.Tensor, y_target: torch.Tensor,
                       *observed: torch.Tensor) -> torch.Tensor:
        return self._each(lambda p: p.inverse_update, x, y, y_target, *observed)

    def simulate_and_update(self, x: torch.Tensor, y_target: torch.Tensor,
                            *observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._each(lambda p: p.simulate_and_update, x, y_target, *observed)

    def has_inverse_update(self) -> bool:  # an instance's answer: its members' (one class)
        return self.first.has_inverse_update()

    def network_input(self, y_target: torch.Tensor) -> torch.Tensor:
        return self._each(lambda p: p.network_input, y_target)

    def prepare_prediction(self, x: torch.Tensor, y_target: torch.Tensor) -> torch.Tensor:
        return self._each(lambda p: p.prepare_prediction, x, y_target)

    def member_losses(self, per_example: torch.Tensor) -> torch.Tensor:
        """Each member's batch objective (K,) from the folded per-example values, by `batch_reduction`."""
        rows = per_example.view(self.members, -1)
        return rows.sum(1) if self.batch_reduction == "sum" else rows.mean(1)

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        """The sum of the members' batch objectives: its gradient in member k's weights is member k's own."""
        return self.member_losses(per_example).sum()


def fold_batches(batches: list[Batch]) -> Batch:
    """The members' batches (x* or None, y*, *observed) as one, member k's examples in its rows."""
    return tuple(None if column[0] is None else torch.cat(column) for column in zip(*batches))


def member_rows(k: int, rows: int) -> slice:
    """Member k's rows of a folded batch with `rows` examples per member."""
    return slice(k * rows, (k + 1) * rows)
