"""What an edge reports to its parent after its round over its children, simulated or deployed.

An edge (``murmura.sim.hierarchical.EdgeAggregator`` in a simulated tree, ``murmura edge``
over gRPC) is a Learner to its parent whose ``fit`` is a server round over its children
(``murmura.engine.server_round``). Both report the same thing: the aggregate delta with the
children's example count (``edge_examples``), so the parent's weighted mean of edge deltas
equals the flat one over all children (Liu et al. 2020, "Client-Edge-Cloud Hierarchical
Federated Learning"); under central DP a ``PartialSum`` rule's clipped, weighted sum instead
of a mean; and, for a round that released no model, the same failure (``nothing_to_report``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import MurmuraError
from murmura.types import Scalar, Vector


class EdgeRoundFailed(MurmuraError):
    """An edge aggregator had too few valid child updates to report one of its own."""


def nothing_to_report(edge: str, round_: int, valid: int, failures: int) -> EdgeRoundFailed:
    """The failure of an edge's round that released no model (simulated and deployed alike).

    ``valid`` counts the child updates in the edge's aggregate: under secure aggregation the
    survivors of the protocol, as the edge's strategy reports them.
    """
    return EdgeRoundFailed(
        f"edge {edge!r} round {round_}: {valid} valid child updates, {failures} failures; "
        "nothing to report"
    )


@runtime_checkable
class PartialSum(Protocol):
    """An edge rule that reports a sum (and counts) to its parent instead of a mean."""

    def partial_sum(
        self, round_: int, config: Mapping[str, Scalar], updates: UpdateBuffer
    ) -> tuple[Vector, dict[str, float]]:
        """The update to report and the metrics that go with it."""
        ...


def edge_examples(buffer: UpdateBuffer) -> int:
    """The example count an edge reports: its children's, each capped at its share if set.

    Without ``max_weight_share`` this is the children's total, so the parent's weighted mean
    of edge deltas is the flat one; with it, a child that claims 2^31 - 1 examples adds only
    its capped weight, and cannot make its edge dominate the parent either.
    """
    return int(round(buffer.total_weight()))
