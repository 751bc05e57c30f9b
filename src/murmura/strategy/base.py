"""The Strategy extension point: how a round is configured and how updates become a model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from murmura.aggregate.buffer import UpdateBuffer
from murmura.types import EvaluateRes, Failure, Scalar, Vector


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
