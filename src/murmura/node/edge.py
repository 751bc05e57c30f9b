"""An edge aggregator over gRPC: a worker to its parent and a coordinator to its children.

Towards its parent it is a ``Worker`` on a ``CoordinatorLink`` (dials out, heartbeats,
rejoins); its "local training" is one round over its own children, run by a ``Coordinator``
(the same hub, endpoint, validation, strategy, checkpoints and SQLite records as
``murmura server``) whose rounds are driven by the parent's instructions instead of its own
loop. It reports the aggregate delta with the summed example count of the children that
contributed, so the parent's weighted mean equals the flat one over all children (Liu et al.
2020, "Client-Edge-Cloud Hierarchical Federated Learning"). The parent sees only edge
aggregates. ``[strategy] max_weight_share`` caps each child's weight in the edge's round and
in the count it reports (``murmura.sim.hierarchical.edge_examples``), as in the simulation.

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
from murmura.errors import RejoinTimeout
from murmura.node import progress
from murmura.node.coordinator import Coordinator, CoordinatorSettings, run_dir
from murmura.node.worker import Worker, WorkerStats
from murmura.sim.hierarchical import EdgeRoundFailed, edge_examples
from murmura.strategy.base import Strategy
from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import ServerOptions, start_server
from murmura.transport.hub import Hub, RoundOutcome
from murmura.types import FitIns, FitRes, Layout
from murmura.validation import Check

log = logging.getLogger(__name__)


class EdgeCoordinator(Coordinator):
    """A ``Coordinator`` whose rounds the parent drives; it keeps each round's buffer."""

    last_buffer: UpdateBuffer | None = None

    async def _collect(self, round_: int, cohort: list[str], buffer: UpdateBuffer) -> RoundOutcome:
        self.last_buffer = buffer
        return await super()._collect(round_, cohort, buffer)


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
    ) -> None:
        self.edge, self.run_id, self.min_clients, self.loop = edge, run_id, min_clients, loop
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
        try:
            metrics = await edge.run_round(self.run_id, ins.round, first=self.first)
        except RejoinTimeout as exc:  # no children to sample: fail the parent's round now
            raise EdgeRoundFailed(
                f"edge round {ins.round}: cannot sample its children ({exc.reason}); "
                "nothing to report"
            ) from None
        finally:
            self.first = False
        buffer = edge.last_buffer
        got = 0 if buffer is None else len(buffer)
        if buffer is None or got < self.min_clients:
            raise EdgeRoundFailed(
                f"edge round {ins.round}: {got} valid child updates (need {self.min_clients}), "
                f"{len(metrics.failures)} failures; nothing to report"
            )
        out: dict[str, float] = {
            "clients": float(got),
            "child_failures": float(len(metrics.failures)),
        }
        if metrics.train_loss is not None:
            out["train_loss"] = metrics.train_loss
        delta = np.asarray(edge.weights, dtype=np.float32) - start
        return FitRes(delta, edge_examples(buffer), out)


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
            strategy,
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
        server, self.port = await start_server(hub, s.server)
        (cs.state_dir / "address").write_text(f"{s.server.host}:{self.port}\n")
        progress.listening(s.name, f"{s.server.host}:{self.port}", s.credentials is not None)
        client = EdgeClient(coord, rec.run_id, s.min_clients, asyncio.get_running_loop())
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
