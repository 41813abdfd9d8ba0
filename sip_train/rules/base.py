"""How a batch becomes a parameter update: the network's objective and the optimizer stepping it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

import torch

from sip_train.problems.base import InverseProblem

if TYPE_CHECKING:
    from sip_train.module import InverseProblemModule

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class UpdateRule:
    """An update rule: `objective` says what the network minimises, `training_step` how it is stepped.

    Subclasses implement `objective`; rules that need more than backward + step (line
    searches, curvature products) override `training_step`.

    Args:
        optimizer: a torch optimizer class or partial (Hydra `_partial_: true`), given `lr`.
        lr: learning rate of that optimizer (must be positive).
        create_graph: back-propagate with create_graph=True (AdaHessian's Hessian-vector
            products need the graph of the gradient).
    """

    def __init__(self, optimizer: OptimizerFactory, lr: float, create_graph: bool = False) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"optimizer.lr={lr!r} is invalid: must be a positive number")
        self.optimizer_factory = optimizer
        self.lr = float(lr)
        self.create_graph = create_graph

    def check_problem(self, problem: InverseProblem) -> None:
        """Fail at start-up if this rule cannot train `problem` (e.g. SIP without an inverse update)."""

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer that steps the network's parameters."""
        return self.optimizer_factory(parameters, lr=self.lr)

    def objective(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example network objective (B,) for prediction x, and the simulated y = P(x) (detached)."""
        raise NotImplementedError

    def training_step(self, module: InverseProblemModule, y_target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One parameter update on a batch.

        Returns the batch objective `loss`, the prediction `x` and simulated `y` (detached), and
        optionally `stats`: a dict of scalar diagnostics of the rule, logged as train/<name>.
        """
        optimizer = module.optimizers()
        result: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            x = module.predict(y_target)
            per_example, y = self.objective(module.problem, x, y_target)
            loss = module.problem.reduce(per_example)
            optimizer.zero_grad()
            module.manual_backward(loss, create_graph=self.create_graph)
            result.update(loss=loss.detach(), x=x.detach(), y=y)
            return loss

        optimizer.step(closure=closure)
        return result
