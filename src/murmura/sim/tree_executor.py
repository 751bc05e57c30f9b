"""Runs a tree's round as one cohort: every edge's children trained in one executor call.

The root of a hierarchical simulation is a ``Simulation`` whose clients are edges. Run one
after another, each edge would train its own children, 25 at a time on W1, and a vectorised
executor would gain little. ``TreeExecutor`` is the root's executor instead: it asks every
edge of the round for its cohort (``begin``), trains the children of all edges together on
the ``inner`` executor (the one ``murmura.sim.choose`` picks for a flat run), then lets each
edge validate and aggregate its own children's outcomes (``finish``), in its own order. Edges
under edges are flattened the same way, level by level. Each child sees exactly what its
edge's own ``fit`` would have given it, so the result is the sequential tree's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from murmura.client import Client
from murmura.sim.executor import Executor, Outcome
from murmura.types import FitIns, FitRes

if TYPE_CHECKING:
    from murmura.sim.hierarchical import EdgeRound


@runtime_checkable
class SplitRound(Protocol):
    """A node that runs its round in two halves (an edge): choose a cohort, then aggregate."""

    node_id: str

    def begin(self, ins: FitIns) -> EdgeRound:
        """The cohort to train this round and its instructions."""
        ...

    def finish(self, round_: EdgeRound, outcomes: Iterable[Outcome]) -> FitRes:
        """The node's own result from its cohort's outcomes."""
        ...


class _Batch:
    """Clients that share one ``FitIns`` and so can be trained in one executor call."""

    def __init__(self, ins: FitIns) -> None:
        self.ins = ins
        self.members: list[Client] = []
        self.ids: set[str] = set()

    def takes(self, ins: FitIns, cohort: Sequence[Client]) -> bool:
        """Whether ``cohort`` may join: the same instructions, no node id already here."""
        same = (
            ins.round == self.ins.round
            and ins.config == self.ins.config
            and (ins.weights is self.ins.weights or np.array_equal(ins.weights, self.ins.weights))
        )
        return same and not any(c.node_id in self.ids for c in cohort)

    def add(self, cohort: Sequence[Client]) -> None:
        self.members.extend(cohort)
        self.ids.update(c.node_id for c in cohort)


class TreeExecutor:
    """The root's executor in a tree: all leaf clients of a round go to ``inner`` at once."""

    def __init__(self, inner: Executor) -> None:
        self.inner = inner

    def fit(self, cohort: Sequence[Client], ins: FitIns) -> Iterator[Outcome]:
        """Yield ``(node id, result or exception)`` for each member of ``cohort``, in order."""
        yield from zip((c.node_id for c in cohort), self._run(cohort, ins), strict=True)

    def _run(self, cohort: Sequence[Client], ins: FitIns) -> list[FitRes | BaseException]:
        """Each member's outcome in cohort order: edges begin, children train, edges finish."""
        out: list[FitRes | BaseException | None] = [None] * len(cohort)
        leaves = _Batch(ins)
        batches = [leaves]
        started: list[tuple[int, SplitRound, EdgeRound, _Batch]] = []
        for i, node in enumerate(cohort):
            if not isinstance(node, SplitRound):
                leaves.add([node])
                continue
            try:
                round_ = node.begin(ins)
            except Exception as exc:  # noqa: BLE001 - a failing edge must not end the round
                out[i] = exc
                continue
            batch = next((b for b in batches if b.takes(round_.child_ins, round_.cohort)), None)
            if batch is None:
                batch = _Batch(round_.child_ins)
                batches.append(batch)
            batch.add(round_.cohort)
            started.append((i, node, round_, batch))
        results = [self._outcomes(b) for b in batches]
        for i, node in enumerate(cohort):
            if not isinstance(node, SplitRound):
                out[i] = results[0][node.node_id]
        for i, edge, round_, batch in started:
            done = results[batches.index(batch)]
            try:
                out[i] = edge.finish(round_, ((c.node_id, done[c.node_id]) for c in round_.cohort))
            except Exception as exc:  # noqa: BLE001 - an edge with nothing to report fails alone
                out[i] = exc
        assert all(o is not None for o in out)
        return [o for o in out if o is not None]

    def _outcomes(self, batch: _Batch) -> dict[str, FitRes | BaseException]:
        """Train one batch: nested edges recursively, everything else on ``inner``."""
        if not batch.members:
            return {}
        if any(isinstance(m, SplitRound) for m in batch.members):
            outcomes: Iterable[Outcome] = self.fit(batch.members, batch.ins)
        else:
            outcomes = self.inner.fit(batch.members, batch.ins)
        return dict(outcomes)
