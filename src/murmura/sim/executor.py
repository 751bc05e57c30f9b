"""Executors: how a simulated cohort's local training is run (one after another, ...).

Federated evaluation is a forward pass over each client's small held-out set, so every
executor leaves it to :func:`evaluate_each`, in the coordinating process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Protocol

from murmura.client import Client
from murmura.engine.server_round import Outcome
from murmura.types import EvaluateRes, FitIns, Vector

log = logging.getLogger(__name__)
__all__ = ["EvaluateOutcome", "Executor", "Outcome", "SequentialExecutor", "evaluate_each"]
EvaluateOutcome = tuple[str, EvaluateRes | BaseException]


class Executor(Protocol):
    """Runs ``fit`` for every client of a cohort and yields each outcome as it completes."""

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Yield ``(node id, result or the exception it raised)`` for each client."""
        ...


class SequentialExecutor:
    """Trains the cohort one client at a time in this process."""

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Yield each client's result; an exception is yielded, not raised, so the round goes on."""
        for client in cohort:
            try:
                yield client.node_id, client.fit(ins)
            except Exception as exc:  # noqa: BLE001 - a failing client must not end the round
                yield client.node_id, exc


def evaluate_each(cohort: Sequence[Client], weights: Vector) -> Iterator[EvaluateOutcome]:
    """Yield each client's evaluation of ``weights``, or the exception it raised."""
    for client in cohort:
        try:
            yield client.node_id, client.evaluate(weights)
        except Exception as exc:  # noqa: BLE001 - a failing client must not end the round
            yield client.node_id, exc
