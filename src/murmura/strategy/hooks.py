"""Optional strategy capabilities that every round loop honours, simulated or deployed.

``Budgeted`` (differential privacy, see ``murmura.strategy.dp``): the loop ends before any
round for which ``should_stop`` is true, and adds ``round_metrics`` (epsilon) to each round's
metrics. ``Stateful`` (server optimiser moments, privacy accountant, adaptive clip norm, ...):
the state is checkpointed with the model so that a resumed run goes on where it stopped.
``FederatedEvaluator`` (the FedAvg family and the wrappers around it): after aggregating, the
loop sends the new model to ``sample_evaluate``'s nodes, which evaluate it on their own
held-out data, and reports ``aggregate_evaluate`` of their results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from murmura.types import EvaluateRes, Failure


@runtime_checkable
class Budgeted(Protocol):
    """A strategy that spends a budget each round and may end the run before it runs out."""

    def should_stop(self, round_: int) -> bool:
        """Whether running ``round_`` would exceed the budget."""
        ...

    def round_metrics(self, round_: int) -> dict[str, object]:
        """Entries for the round's ``RoundMetrics.extra`` (e.g. epsilon spent so far)."""
        ...


@runtime_checkable
class Stateful(Protocol):
    """A strategy whose state between rounds must survive a restart."""

    def state_dict(self) -> Mapping[str, object] | None:
        """The state, tagged with its kind (nested dicts, lists, scalars and numpy arrays).

        None: the strategy keeps no state (``StrategyBase``'s default).
        """
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict``; refuses a state of another kind."""
        ...


@runtime_checkable
class FederatedEvaluator(Protocol):
    """A strategy that has clients evaluate the global model on their own data.

    Flower's ``configure_evaluate`` and ``aggregate_evaluate``; the instruction carries only
    the model.
    """

    def sample_evaluate(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The nodes that evaluate this round's new model ([] for none)."""
        ...

    def aggregate_evaluate(
        self,
        round_: int,
        results: Sequence[tuple[str, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> EvaluateRes | None:
        """The round's federated loss and metrics from the valid results, or None."""
        ...


def evaluation_sample(strategy: object, round_: int, nodes: Sequence[str]) -> list[str]:
    """A ``FederatedEvaluator``'s evaluating nodes (none for other strategies)."""
    if isinstance(strategy, FederatedEvaluator):
        return strategy.sample_evaluate(round_, nodes)
    return []


def evaluation_aggregate(
    strategy: object,
    round_: int,
    results: Sequence[tuple[str, EvaluateRes]],
    failures: Sequence[Failure],
) -> EvaluateRes | None:
    """A ``FederatedEvaluator``'s aggregate of ``results`` (None for other strategies)."""
    if isinstance(strategy, FederatedEvaluator):
        return strategy.aggregate_evaluate(round_, results, failures)
    return None


def budget_stops(strategy: object, round_: int) -> bool:
    """Whether a ``Budgeted`` strategy refuses to run ``round_`` (never for the others)."""
    return isinstance(strategy, Budgeted) and strategy.should_stop(round_)


def budget_metrics(strategy: object, round_: int) -> dict[str, object]:
    """A ``Budgeted`` strategy's entries for round ``round_``'s metrics (none for the others)."""
    return dict(strategy.round_metrics(round_)) if isinstance(strategy, Budgeted) else {}
