"""An edge aggregator over gRPC: a worker to its parent and a coordinator to its children.

Towards its parent it is a ``Worker`` on a ``CoordinatorLink`` (dials out, heartbeats,
rejoins); its "local training" is one round over its own children, run by a ``Coordinator``
(the same hub, endpoint, validation, strategy, checkpoints and SQLite records as
``murmura server``) whose rounds are driven by the parent's instructions instead of its own
loop. It reports the aggregate delta with the summed example count of the children that
contributed, so the parent's weighted mean equals the flat one over all children (Liu et al.
2020, "Client-Edge-Cloud Hierarchical Federated Learning"). The parent sees only edge
aggregates. ``[strategy] max_weight_share`` caps each child's weight in the edge's round and
in the count it reports (``murmura.engine.edge_round.edge_examples``), as in the simulation.

It runs the simulated edge's rule (``murmura.node.topology_deploy.edge_strategy``). Under
central DP that is ``EdgeSum`` (``PartialRound`` here): the edge clips every child's update
with the root's clip norm and reports the weighted sum and counts, no noise and no division;
the root adds the noise once (McMahan et al. 2018). With ``[secagg]`` each round over the
children is SecAgg+ (``SecureRounds``, as ``murmura server`` runs it) and the edge reports the
survivors' unmasked total weight as its count. A round that releases nothing fails the
parent's round with the simulated edge's reason (``nothing_to_report``).

An edge whose children are all gone (or fewer than its strategy's ``min_clients``) fails the
parent's round at once (``rejoin_timeout_s`` 0: the round is not started, nothing recorded),
with a worker error the parent lists among the round's failures. The edge itself stays alive
to the parent, so the parent's ``rejoin_timeout`` does not wait for the edge's children.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.engine.edge_round import EdgeRoundFailed, PartialSum, edge_examples, nothing_to_report
from murmura.engine.server_round import CohortPlan
from murmura.errors import RejoinTimeout
from murmura.node import progress
from murmura.node.coordinator import Coordinator, CoordinatorSettings, run_dir
from murmura.node.secagg_coordinator import SecureRounds, SecureTiming
from murmura.node.worker import Worker, WorkerStats
from murmura.privacy.secagg import SecAggAbort, SecAggResult
from murmura.strategy.base import Strategy, Wrapper
from murmura.strategy.secure import SecureAggregation
from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import ServerOptions, start_server
from murmura.transport.hub import Hub, Outgoing, RoundOutcome
from murmura.transport.secagg_exchange import SecAggExchange
from murmura.transport.secagg_service import secagg_handlers
from murmura.types import Failure, FitIns, FitRes, Layout, RoundMetrics, Scalar, Vector
from murmura.validation import Check

log = logging.getLogger(__name__)


class EdgeCoordinator(Coordinator):
    """A ``Coordinator`` whose rounds the parent drives; it keeps each round's buffer."""

    last_buffer: UpdateBuffer | None = None
    last_secure: SecAggResult | SecAggAbort | None = None

    async def _collect(self, plan: CohortPlan, buffer: UpdateBuffer) -> RoundOutcome:
        self.last_buffer = buffer
        return await super()._collect(plan, buffer)


class RecordedSecureRounds(SecureRounds):
    """An edge's SecAgg+ rounds (``SecureRounds``), keeping the outcome for its report."""

    last: SecAggResult | SecAggAbort | None = None

    async def run(
        self, outgoing: Outgoing, cohort: list[str], dim: int
    ) -> SecAggResult | SecAggAbort:
        """The round's result or abort, kept in ``last``."""
        self.last = await super().run(outgoing, cohort, dim)
        return self.last


class PartialRound(Wrapper):
    """An edge's ``PartialSum`` rule (central DP's ``EdgeSum``) in the coordinator's round.

    The round's ``aggregate`` keeps the children's clipped, weighted sum for the parent
    instead of moving the edge's model; ``config`` is the parent's instruction (its clip norm).
    """

    def __init__(self, inner: Strategy) -> None:
        if not isinstance(inner, PartialSum):
            raise TypeError(f"{type(inner).__name__} reports no partial sum")
        super().__init__(inner)
        self.partial: PartialSum = inner
        self.config: dict[str, Scalar] = {}
        self.last: tuple[Vector, dict[str, float]] | None = None

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Keep the partial sum of ``updates``; the edge's model is not moved."""
        self.last = self.partial.partial_sum(round_, self.config, updates)
        return None


@dataclass(frozen=True, slots=True)
class EdgeSettings:
    """Who the edge is, where its parent is, and how it runs its children's rounds."""

    name: str
    parent: str
    coordinator: CoordinatorSettings
    server: ServerOptions
    credentials: keys.Credentials | None
    min_clients: int = 1
    """Fewest valid child updates for the edge to report an aggregate; else it reports none."""
    link: LinkOptions = dataclasses.field(default_factory=LinkOptions)


class EdgeClient:
    """The edge's ``FitClient``: one round over the children per parent instruction."""

    def __init__(
        self,
        edge: EdgeCoordinator,
        run_id: str,
        min_clients: int,
        loop: asyncio.AbstractEventLoop,
        name: str = "edge",
    ) -> None:
        self.edge, self.run_id, self.min_clients, self.loop = edge, run_id, min_clients, loop
        self.name = name
        self.first = True

    def fit(self, ins: FitIns) -> FitRes:
        """Called by the worker thread: run the children's round on the edge's event loop."""
        return asyncio.run_coroutine_threadsafe(self._fit(ins), self.loop).result()

    async def _fit(self, ins: FitIns) -> FitRes:
        edge = self.edge
        start = np.asarray(ins.weights, dtype=np.float32)
        if start.shape != (edge.layout.size,):
            raise ValueError(f"parent model has shape {start.shape}, edge needs {edge.layout.size}")
        edge.weights = start.copy()
        edge.settings = dataclasses.replace(edge.settings, client_config=dict(ins.config))
        edge.last_buffer = None
        partial = edge.strategy if isinstance(edge.strategy, PartialRound) else None
        if partial is not None:
            partial.config, partial.last = dict(ins.config), None
        try:
            metrics = await edge.run_round(self.run_id, ins.round, first=self.first)
        except RejoinTimeout as exc:  # no children to sample: fail the parent's round now
            raise EdgeRoundFailed(
                f"edge round {ins.round}: cannot sample its children ({exc.reason}); "
                "nothing to report"
            ) from None
        finally:
            self.first = False
        out: dict[str, float] = {
            "clients": float(metrics.participants),
            "child_failures": float(len(metrics.failures)),
        }
        if metrics.train_loss is not None:
            out["train_loss"] = metrics.train_loss
        if partial is not None:  # central DP: a sum of nothing is a valid part of the release
            assert partial.last is not None and edge.last_buffer is not None
            delta, extra = partial.last
            return FitRes(delta, edge_examples(edge.last_buffer), {**out, **extra})
        examples = self._examples(metrics)
        if examples is None:
            raise nothing_to_report(
                self.name, ins.round, metrics.participants, len(metrics.failures)
            )
        delta = np.asarray(edge.weights, dtype=np.float32) - start
        return FitRes(delta, examples, out)

    def _examples(self, metrics: RoundMetrics) -> int | None:
        """The example count to report for the round just run; None: it released no model.

        Plain rounds: the children's (``edge_examples``). Secure rounds: the survivors'
        unmasked total weight, all the edge learns (their example counts, up to quantisation).
        """
        edge = self.edge
        if edge.secure is not None:
            got = edge.secure.last if isinstance(edge.secure, RecordedSecureRounds) else None
            if not isinstance(got, SecAggResult) or len(got.survivors) < self.min_clients:
                return None
            return int(round(got.total_weight))
        buffer = edge.last_buffer
        if buffer is None or len(buffer) == 0 or len(buffer) < self.min_clients:
            return None
        return edge_examples(buffer)


class Edge:
    """Serves the children, and works for the parent until the parent ends the run."""

    def __init__(
        self,
        settings: EdgeSettings,
        strategy: Strategy,
        layout: Layout,
        checks: Sequence[Check] | None = None,
    ) -> None:
        self.settings = settings
        self.coordinator = EdgeCoordinator(
            PartialRound(strategy) if isinstance(strategy, PartialSum) else strategy,
            np.zeros(layout.size, dtype=np.float32),
            layout,
            dataclasses.replace(settings.coordinator, rejoin_timeout_s=0.0),  # fail the round
            settings.server,
            checks,
        )
        self.coordinator.node, self.coordinator.planned = settings.name, None
        self.port = 0
        self.worker: Worker | None = None
        """Its worker towards the parent, once ``run`` started it."""

    async def run(self) -> WorkerStats:
        """Start the children's endpoint, then serve the parent's rounds until SHUTDOWN."""
        s, coord = self.settings, self.coordinator
        cs = s.coordinator
        rec = coord.state.open_run(cs.run_name, f"{cs.run_name}-{secrets.token_hex(4)}", {})
        coord.run_path = run_dir(cs.state_dir, rec.run_id)
        coord.run_path.mkdir(parents=True, exist_ok=True)
        (cs.state_dir / "latest").write_text(rec.run_id + "\n")
        coord.hub = hub = Hub(rec.run_id, cs.heartbeat_s, cs.lost_after_s)
        extra = []
        if isinstance(coord.strategy, SecureAggregation):  # per-edge SecAgg+, as simulated
            exchange = SecAggExchange(rec.run_id)
            timing = SecureTiming(cs.round_timeout_s, cs.secagg_stage_timeout_s)
            coord.secure = RecordedSecureRounds(coord.strategy, hub, exchange, timing)
            extra.append(secagg_handlers(exchange))
        server, self.port = await start_server(hub, s.server, extra)
        (cs.state_dir / "address").write_text(f"{s.server.host}:{self.port}\n")
        progress.listening(s.name, f"{s.server.host}:{self.port}", s.credentials is not None)
        client = EdgeClient(coord, rec.run_id, s.min_clients, asyncio.get_running_loop(), s.name)
        link = CoordinatorLink(s.parent, s.name, s.credentials, s.link)
        worker = Worker(link, client, layout=coord.layout)  # checks each parent instruction
        self.worker = worker
        try:
            stats = await asyncio.to_thread(worker.run)
            if stats.reason == "shutdown":
                coord.state.finish_run(rec.run_id)
            await coord.hub.finish()
            await asyncio.sleep(cs.shutdown_grace_s)  # let the children pull SHUTDOWN
        finally:
            worker.close()
            await server.stop(grace=0.5)
            coord.state.close()
        log.info("node=%s round=%d: edge stopped: %s", s.name, stats.last_round, stats.reason)
        return stats
