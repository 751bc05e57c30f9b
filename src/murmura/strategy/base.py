"""The Strategy extension point: how a round is configured and how updates become a model.

``Strategy`` is the whole server-side protocol (Flower's ``Strategy``: sample, configure,
aggregate, evaluate, federated evaluation) plus what every round loop needs of it: its state
for a checkpoint and its privacy budget. ``StrategyBase`` gives every method a default, so a
rule writes only what it changes; ``Wrapper`` forwards every method to ``inner``, so a wrapper
(central DP, accounting, secure aggregation) overrides only its own step and composes with
any strategy as a black box.

The linear path is one pipeline: clip (``client_clip``), weighted sum, mask (secure
aggregation), noise and server step (``release``). A strategy whose round is "a weighted
mean, then a server step" says so (``linear_refusal() is None``) and offers ``release``, so a
wrapper that computes the weighted sum in its own way (masked, clipped) hands the sum on
without knowing which strategy is inside (McMahan et al. 2018's DP-FedAvg; Bell et al.
2020's SecAgg+ over the same sum).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.buffer import UpdateBuffer
from murmura.types import EvaluateRes, Failure, Scalar, Vector

Sum = NDArray[np.floating[Any]]
"""A weighted sum of updates (float64 when unmasked by secure aggregation)."""


@dataclass(frozen=True, slots=True)
class ClientClip:
    """What each update goes through before the sum: the sensitivity bound of central DP.

    Clip to L2 norm ``clip_norm``, weight ``min(n / weight_cap, 1)`` (1 without a cap).
    """

    clip_norm: float
    weight_cap: float | None


class Strategy(Protocol):
    """Server-side logic of federated training; knows nothing of how bytes travel."""

    @property
    def keep_rows(self) -> bool:
        """Whether ``aggregate`` needs every update (else a running weighted sum suffices)."""
        ...

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The nodes that train in this round."""
        ...

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """Instructions sent with the model to every sampled node."""
        ...

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """The next global model, or ``None`` to keep the current one unchanged."""
        ...

    def evaluate(self, round_: int, weights: Vector) -> EvaluateRes | None:
        """Central evaluation of the global model, if the strategy has an evaluator."""
        ...

    def sample_evaluate(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The nodes that evaluate this round's new model on their own data ([] for none)."""
        ...

    def aggregate_evaluate(
        self,
        round_: int,
        results: Sequence[tuple[str, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> EvaluateRes | None:
        """The round's federated loss and metrics from the valid results, or None."""
        ...

    def state_dict(self) -> Mapping[str, object] | None:
        """The state between rounds a checkpoint must keep, tagged with its kind; None: none."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict``; refuses a state of another kind."""
        ...

    def should_stop(self, round_: int) -> bool:
        """Whether running ``round_`` would exceed the privacy budget."""
        ...

    def round_metrics(self, round_: int) -> dict[str, object]:
        """Entries for the round's ``RoundMetrics.extra`` (e.g. epsilon spent so far)."""
        ...

    # the linear pipeline: clip, weighted sum, mask, noise, server step

    @property
    def fraction(self) -> float:
        """The share of nodes that take part in a round (the accountant's sampling rate)."""
        ...

    @property
    def min_results(self) -> int:
        """Fewest summed updates for which ``release`` moves the model (0: it always does)."""
        ...

    def linear_refusal(self) -> str | None:
        """None if a round is a weighted mean then a server step (``release``), else why not."""
        ...

    def client_clip(self) -> ClientClip | None:
        """How each update is clipped and weighted before the sum (None: as sent, by examples)."""
        ...

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """The next model from a weighted sum ``total`` of ``weight``; None keeps the model.

        ``total=None``: the round produced no sum (aborted, too few results); budgets are still
        spent for it.
        """
        ...


class StrategyBase:
    """Defaults for every ``Strategy`` method.

    All nodes train, nothing is sent but the model, no evaluation, no state, no budget, and a
    round that is not the linear pipeline.
    """

    @property
    def keep_rows(self) -> bool:
        """A rule that is not linear needs the rows."""
        return True

    @property
    def fraction(self) -> float:
        """Every node takes part."""
        return 1.0

    @property
    def min_results(self) -> int:
        """One update suffices."""
        return 1

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """Every node."""
        return list(nodes)

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """No instructions beyond the model."""
        return {}

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Keep the model (a rule overrides this)."""
        return None

    def evaluate(self, round_: int, weights: Vector) -> EvaluateRes | None:
        """No central evaluation."""
        return None

    def sample_evaluate(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """No federated evaluation."""
        return []

    def aggregate_evaluate(
        self,
        round_: int,
        results: Sequence[tuple[str, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> EvaluateRes | None:
        """No federated evaluation figures."""
        return None

    def state_dict(self) -> Mapping[str, object] | None:
        """No state between rounds."""
        return None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore."""

    def should_stop(self, round_: int) -> bool:
        """No budget to run out of."""
        return False

    def round_metrics(self, round_: int) -> dict[str, object]:
        """Nothing to add."""
        return {}

    def linear_refusal(self) -> str | None:
        """Not the linear pipeline unless a rule says so."""
        return f"{type(self).__name__} does not combine updates as a weighted mean"

    def client_clip(self) -> ClientClip | None:
        """Updates enter the sum as sent."""
        return None

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """Keep the model (only a linear rule releases a sum)."""
        return None


class Wrapper(StrategyBase):
    """A strategy around ``inner`` that forwards every method; a wrapper overrides its step."""

    def __init__(self, inner: Strategy) -> None:
        self.inner = inner

    @property
    def keep_rows(self) -> bool:
        """As the inner strategy."""
        return self.inner.keep_rows

    @property
    def fraction(self) -> float:
        """As the inner strategy."""
        return self.inner.fraction

    @property
    def min_results(self) -> int:
        """As the inner strategy."""
        return self.inner.min_results

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The inner strategy's sample."""
        return self.inner.sample(round_, nodes)

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """The inner strategy's instructions."""
        return self.inner.configure(round_, weights)

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """The inner strategy's aggregate."""
        return self.inner.aggregate(round_, weights, updates, failures)

    def evaluate(self, round_: int, weights: Vector) -> EvaluateRes | None:
        """The inner strategy's central evaluation: a wrapper never changes how it is judged."""
        return self.inner.evaluate(round_, weights)

    def sample_evaluate(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The inner strategy's evaluating nodes."""
        return self.inner.sample_evaluate(round_, nodes)

    def aggregate_evaluate(
        self,
        round_: int,
        results: Sequence[tuple[str, EvaluateRes]],
        failures: Sequence[Failure],
    ) -> EvaluateRes | None:
        """The inner strategy's federated evaluation figures."""
        return self.inner.aggregate_evaluate(round_, results, failures)

    def state_dict(self) -> Mapping[str, object] | None:
        """The inner strategy's state."""
        return self.inner.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the inner strategy's state."""
        self.inner.load_state_dict(state)

    def should_stop(self, round_: int) -> bool:
        """The inner strategy's budget decision."""
        return self.inner.should_stop(round_)

    def round_metrics(self, round_: int) -> dict[str, object]:
        """The inner strategy's metrics."""
        return self.inner.round_metrics(round_)

    def linear_refusal(self) -> str | None:
        """As the inner strategy."""
        return self.inner.linear_refusal()

    def client_clip(self) -> ClientClip | None:
        """As the inner strategy."""
        return self.inner.client_clip()

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """The inner strategy's release."""
        return self.inner.release(round_, weights, total, weight)
