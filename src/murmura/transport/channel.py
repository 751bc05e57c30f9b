"""The transport seam: how a coordinator's round reaches its nodes, whatever carries the bytes.

``Channel`` is everything the coordinator's round logic asks of a transport: who is alive,
wait for joins, open a round (an instruction for a set of targets, results into a sink),
collect it (results and failures with reasons), and tell the nodes the run is over. ``Hub``
is the gRPC channel (its handlers feed it from the network); ``LocalChannel`` answers in this
process through a handler, like httpx's ``MockTransport``: over a dict of learners
(``LocalChannel.of_learners``, in-process nodes) or over any function a test writes, so the
round logic (sampling, validation, aggregation, failures, checkpoints) runs without a socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from murmura.learner import Learner
from murmura.transport.hub import Outgoing, RoundOutcome, Sink
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import EvaluateRes, FitIns, FitRes, Vector


class Channel(Protocol):
    """The coordinator's view of its nodes for one run."""

    def alive(self) -> list[str]:
        """The nodes that can be sampled now, sorted."""
        ...

    async def wait_for_join(self, timeout_s: float) -> None:
        """Return when a node joins or comes back, or after ``timeout_s``."""
        ...

    async def open_round(
        self, outgoing: Outgoing, targets: frozenset[str], sink: Sink | None = None
    ) -> None:
        """Send ``outgoing`` to ``targets``; each result goes to ``sink`` (raising rejects it)."""
        ...

    async def collect(self, timeout_s: float) -> RoundOutcome:
        """Close the open round once every target answered or failed, or at ``timeout_s``."""
        ...

    async def finish(self) -> None:
        """Tell every node the run is over."""
        ...


Handler = Callable[[str, Outgoing, Vector], FitRes | EvaluateRes]
"""``(node, instruction, weights) -> result``; raising is the node's error."""


class LocalChannel:
    """A ``Channel`` whose nodes answer in this process through ``handler``.

    ``handler`` runs in a worker thread per target when the round is collected; a node that
    raises fails the round with ``worker error: Type: message``, a result the sink refuses
    with ``update rejected: reason``, as over gRPC. A ``down`` node is sampled but never
    answers, as a worker lost during the round: it fails at the deadline.
    """

    def __init__(self, nodes: Sequence[str], handler: Handler, run_id: str = "local") -> None:
        self.nodes, self.handler, self.run_id = sorted(nodes), handler, run_id
        self.down: set[str] = set()
        self.finished = False
        self.sent: list[tuple[str, Outgoing]] = []
        """Every instruction delivered, in order: (node, instruction)."""
        self._open: tuple[Outgoing, frozenset[str], Sink | None] | None = None

    @classmethod
    def of_learners(cls, learners: Mapping[str, Learner]) -> LocalChannel:
        """In-process nodes: FIT runs ``learner.fit``, EVALUATE ``learner.evaluate``."""

        def answer(node: str, out: Outgoing, weights: Vector) -> FitRes | EvaluateRes:
            learner = learners[node]
            if out.kind == pb.EVALUATE:
                return learner.evaluate(weights)
            return learner.fit(FitIns(out.round, weights, dict(out.config)))

        return cls(list(learners), answer)

    def alive(self) -> list[str]:
        """Every node (a ``down`` one is lost only after it was sampled)."""
        return list(self.nodes)

    async def wait_for_join(self, timeout_s: float) -> None:
        """Nobody joins an in-process channel later: wait out the timeout."""
        await asyncio.sleep(max(timeout_s, 0.0))

    async def open_round(
        self, outgoing: Outgoing, targets: frozenset[str], sink: Sink | None = None
    ) -> None:
        """Remember the round; the nodes answer when it is collected."""
        self._open = (outgoing, targets, sink)

    async def collect(self, timeout_s: float) -> RoundOutcome:
        """Ask every live target (in sorted order), feed the sink, close the round."""
        if self._open is None:
            raise RuntimeError("no open round")
        outgoing, targets, sink = self._open
        self._open = None
        weights = _weights(outgoing)
        results: dict[str, DecodedResult] = {}
        failures: dict[str, str] = {}
        for node in sorted(targets):
            if node in self.down:
                failures[node] = "no result before the round deadline"
                continue
            self.sent.append((node, outgoing))
            try:
                res = await asyncio.to_thread(self.handler, node, outgoing, weights.copy())
            except Exception as exc:  # noqa: BLE001 - a node's error is its failure
                failures[node] = f"worker error: {type(exc).__name__}: {exc}"
                continue
            decoded = self._decoded(node, outgoing, res)
            try:
                if sink is not None:
                    sink(node, outgoing.round, decoded)
            except Exception as exc:  # noqa: BLE001 - the validator's own error types
                failures[node] = f"update rejected: {getattr(exc, 'reason', str(exc))}"
                continue
            results[node] = decoded
        return RoundOutcome(outgoing.round, results, failures)

    async def finish(self) -> None:
        """Mark the run over."""
        self.finished = True

    def _decoded(self, node: str, out: Outgoing, res: FitRes | EvaluateRes) -> DecodedResult:
        if isinstance(res, FitRes):
            update = np.asarray(res.update, dtype=np.float32)
            return DecodedResult(
                self.run_id, out.round, node, out.kind, res.num_examples, 0.0,
                dict(res.metrics), update, b"",
            )  # fmt: skip
        return DecodedResult(
            self.run_id, out.round, node, out.kind, res.num_examples, res.loss,
            dict(res.metrics), None, b"",
        )  # fmt: skip


def _weights(out: Outgoing) -> Vector:
    """The model an instruction carries, as a float32 vector."""
    if out.blob is None:
        raise ValueError(f"round {out.round}: the instruction carries no model")
    return np.frombuffer(out.blob.data, dtype="<f4").astype(np.float32)
