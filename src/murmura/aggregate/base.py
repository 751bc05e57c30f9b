"""The Aggregator extension point: pure math on a stacked ``(n, d)`` float32 update matrix."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from murmura.registry import Registry

Matrix = NDArray[np.float32]
Vector = NDArray[np.float32]


class Aggregator(Protocol):
    """Combines ``n`` client updates (rows) with their weights into one ``(d,)`` vector."""

    @property
    def name(self) -> str:
        """The registered name of the rule."""
        ...

    @property
    def linear(self) -> bool:
        """True when the result is the weighted mean, so a running sum can replace the matrix."""
        ...

    def __call__(self, updates: Matrix, weights: Vector) -> Vector:
        """Aggregate the rows of ``updates``."""
        ...

    def check(self, n: int) -> None:
        """Raise ``AggregationError`` if the rule cannot work with ``n`` clients."""
        ...


@dataclass(frozen=True, slots=True)
class Rule:
    """A pure aggregation function bound to its parameters."""

    name: str
    fn: Callable[..., Vector]
    params: Mapping[str, Any] = field(default_factory=dict)
    linear: bool = False
    precondition: Callable[..., None] | None = None

    def __call__(self, updates: Matrix, weights: Vector) -> Vector:
        """Aggregate the rows of ``updates`` with this rule's parameters."""
        self.check(updates.shape[0])
        out: Vector = self.fn(updates, weights, **self.params)
        return out

    def check(self, n: int) -> None:
        """Raise ``AggregationError`` if the rule cannot work with ``n`` clients."""
        if self.precondition is not None:
            self.precondition(n, **self.params)


AGGREGATORS: Registry[Callable[..., Aggregator]] = Registry("aggregator")


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """Build the registered aggregator ``name`` with its parameters."""
    return AGGREGATORS.get(name)(**params)


def normalized(weights: Vector) -> NDArray[np.float64]:
    """Weights scaled to sum to one, in float64; all-zero or negative weights are an error."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if w.ndim != 1 or (w < 0).any() or not total > 0:
        raise ValueError("weights must be a 1-D vector of non-negative numbers with a positive sum")
    out: NDArray[np.float64] = w / total
    return out


@runtime_checkable
class ClientAware(Protocol):
    """An aggregator that keeps per-client state across rounds (FoolsGold's history).

    The strategy passes each row's node id, and checkpoints the state with the model.
    """

    def aggregate_clients(self, nodes: Sequence[str], updates: Matrix, weights: Vector) -> Vector:
        """Aggregate the rows of ``updates``, row ``i`` sent by ``nodes[i]``."""
        ...

    def state_dict(self) -> Mapping[str, object]:
        """The per-client state, tagged with its kind."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict``; refuses a state of another kind."""
        ...
