"""How a batch becomes a parameter update: the network's objective and the optimizer stepping it."""
from __future__ import annotations

from typing import Callable, Iterable, Protocol

import torch
from torch import nn

from sip_train import values
from sip_train.problems.base import InverseProblem

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class StepInterface(Protocol):
    """What an update rule may use of the trainer that runs it (the LightningModule implements it).

    Rules see only this: the problem, the network, the prediction, manual_backward and the optimizer,
    so they never import the module and can be driven by a bare loop (see bench/).
    """

    problem: InverseProblem
    network: nn.Module

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        """x = NN(y*) with the problem's invariants applied (differentiable in the weights)."""

    def manual_backward(self, loss: torch.Tensor, create_graph: bool = False) -> None:
        """Back-propagate `loss` into the network's .grad (precision and DDP handled by the trainer)."""

    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer made by the rule's `make_optimizer`, wrapped by the trainer for stepping."""


class UpdateRule:
    """An update rule: `objective` says what the network minimises, `training_step` how it is stepped.

    Subclasses implement `objective`; rules that need more than backward + step (line
    searches, curvature products) override `training_step`.

    What a rule needs of the run is declared here, read on the built rule by the start-up checks,
    compile=true and the execution modes (never by testing for a concrete class):
    `needs_double_backward` (a backward through a gradient), `differentiates_physics_twice`,
    `single_process` (refused with several processes), `needs_full_precision` (refused in reduced
    precision), `updates_by_loss` (an update is `loss`, backward and an optimizer step: compilable
    whole) and `vectorizable` (can be trained as a vectorised ensemble of networks).
    `ensemble_parameters` names the scalar constructor arguments an ensemble's members may differ in: the
    rule must use each only as a factor on per-example values in `objective`, so that an ensemble can set it
    to a column with one row per example (each member's value on its rows).

    Args:
        optimizer: a torch optimizer class or partial (Hydra `_partial_: true`), given `lr`.
        lr: learning rate of that optimizer (must be positive).
        create_graph: back-propagate with create_graph=True (AdaHessian's Hessian-vector
            products need the graph of the gradient).
    """

    single_process: bool = False
    needs_full_precision: bool = False
    ensemble_parameters: tuple[str, ...] = ()

    def __init__(self, optimizer: OptimizerFactory, lr: float, create_graph: bool = False) -> None:
        self.optimizer_factory = optimizer
        self.lr = values.number("optimizer.lr", lr)
        self.create_graph = create_graph

    @property
    def needs_double_backward(self) -> bool:
        """Whether an update back-propagates through a gradient (AdaHessian's create_graph, curvature products)."""
        return self.create_graph

    @property
    def differentiates_physics_twice(self) -> bool:
        """Whether an update differentiates the simulator's derivatives (compiled physics cannot)."""
        return self.needs_double_backward

    @property
    def vectorizable(self) -> bool:
        """Whether many networks can be trained with this rule as one vectorised ensemble: an update is
        `loss`, one backward and one element-wise optimizer step."""
        return self.updates_by_loss

    def check(self, problem: InverseProblem, network: nn.Module) -> None:
        """Fail at start-up, with one line naming what does not fit, if this rule cannot train
        `network` on `problem` (e.g. SIP without an inverse, a Jacobian over its memory budget)."""

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The torch optimizer that steps the network's parameters."""
        return self.optimizer_factory(parameters, lr=self.lr)

    def objective(
        self, problem: InverseProblem, x: torch.Tensor, y_target: torch.Tensor, *observed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example network objective (B,) for prediction x, and the simulated y = P(x) (detached);
        `observed`: the problem's observed inputs of the batch, passed to its physics after x."""
        raise NotImplementedError

    def loss(self, step: StepInterface, y_target: torch.Tensor, *observed: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The batch objective of the current network, its prediction x and the simulated y (detached): the
        forward half of an update, free of side effects, so that compile=true can compile it whole."""
        x = step.predict(y_target)
        per_example, y = self.objective(step.problem, x, y_target, *observed)
        return step.problem.reduce(per_example), x, y

    @property
    def updates_by_loss(self) -> bool:
        """Whether an update is exactly `loss`, one backward and one optimizer step (what compile=true compiles
        whole); not for rules with their own `training_step` (line searches, curvature) or a double backward."""
        return type(self).training_step is UpdateRule.training_step and not self.needs_double_backward

    def training_step(self, step: StepInterface, y_target: torch.Tensor, *observed: torch.Tensor
                      ) -> dict[str, torch.Tensor]:
        """One parameter update on a batch (observations y* and the problem's observed inputs).

        Returns the batch objective `loss`, the prediction `x` and simulated `y` (detached), and
        optionally `stats`: a dict of scalar diagnostics of the rule, logged as train/<name>.
        """
        optimizer = step.optimizer()
        result: dict[str, torch.Tensor] = {}

        def closure() -> torch.Tensor:
            loss, x, y = self.loss(step, y_target, *observed)
            optimizer.zero_grad()
            step.manual_backward(loss, create_graph=self.create_graph)
            result.update(loss=loss.detach(), x=x.detach(), y=y)
            return loss

        optimizer.step(closure=closure)
        return result


class PlainStep:
    """`StepInterface` without a trainer: plain `loss.backward()` and the rule's bare optimizer, for bare
    training loops (benchmarks, tests) that drive `rule.training_step` themselves."""

    def __init__(self, problem: InverseProblem, network: nn.Module, rule: UpdateRule) -> None:
        self.problem, self.network = problem, network
        self._optimizer = rule.make_optimizer(network.parameters())

    def predict(self, y_target: torch.Tensor) -> torch.Tensor:
        return self.problem.prepare_prediction(self.network(self.problem.network_input(y_target)), y_target)

    def manual_backward(self, loss: torch.Tensor, create_graph: bool = False) -> None:
        loss.backward(create_graph=create_graph)

    def optimizer(self) -> torch.optim.Optimizer:
        return self._optimizer
