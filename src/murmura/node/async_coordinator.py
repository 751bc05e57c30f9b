"""The coordinator in ``[clock] mode = 'async'``: FedAsync and FedBuff over gRPC.

FedBuff (Nguyen et al. 2022) and FedAsync (Xie et al. 2019), as the simulation runs them
(``murmura.simtime.asynchronous``, with the same pure functions of
``murmura.simtime.arrival``), but in real time: the current model goes to any idle worker
(at most ``concurrency`` at once), each result is an arrival, and every ``buffer_size``
usable arrivals are one aggregation by the strategy's rule and server step. An update is
scaled by the staleness function of ``tau``, the aggregations since its worker got its model;
past ``max_staleness`` it is refused with the reason (a failure of the aggregation, an
``update_rejected`` record in the ledger). Nobody waits for a slow worker: it holds its own
dispatch (``murmura.transport.async_hub``) while the others go on.

One aggregation is one round of the ``Coordinator``: the same ledger records, checkpoint,
SQLite completion, metrics line, evaluation and resume. Arrivals are written to SQLite
before the worker is told they were accepted (``murmura.node.arrivals``) and deleted once
their round is recorded, so a coordinator killed with a partly filled buffer resumes with
exactly those updates buffered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.analytics.grpc_round import wait_for_nodes
from murmura.compress.accounting import dense_bytes, round_bytes, uplink_counts
from murmura.engine.server_round import CohortPlan, instructions
from murmura.errors import ConfigError, RejoinTimeout
from murmura.node.arrivals import ArrivalLog, take
from murmura.node.coordinator import (
    Coordinator,
    CoordinatorResult,
    CoordinatorSettings,
)
from murmura.node.state import RunRecord
from murmura.simtime.arrival import AsyncRule, weighted_update
from murmura.strategy.base import Strategy
from murmura.strategy.secure import SecureAggregation
from murmura.transport import codec
from murmura.transport.async_hub import AsyncHub, Settled
from murmura.transport.base import ASYNC
from murmura.transport.channel import Channel
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Events, Hub, Outgoing, Sink
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.registry import DEFAULT as DEFAULT_TRANSPORT
from murmura.transport.registry import refuse_missing
from murmura.transport.streams import DecodedResult
from murmura.types import Failure, Layout, RoundMetrics, Scalar, Vector
from murmura.validation import Check, validate

log = logging.getLogger(__name__)
SETTLE_WAIT_S = 0.25
"""How long the loop waits for a dispatch to settle before it looks for idle workers again."""


class AsyncCoordinator(Coordinator):
    """A ``Coordinator`` whose round is "the next ``buffer_size`` arrivals", not a cohort."""

    def __init__(
        self,
        strategy: Strategy,
        initial_weights: Vector,
        layout: Layout,
        settings: CoordinatorSettings,
        server: ServerOptions,
        rule: AsyncRule,
        checks: Sequence[Check] | None = None,
        transport: str = DEFAULT_TRANSPORT,
    ) -> None:
        refuse_missing(transport, {ASYNC})  # its dispatches need the hub as the channel
        if isinstance(strategy, SecureAggregation):
            raise ConfigError(
                "secagg.enabled = true with clock.mode = 'async': secure aggregation needs a "
                "fixed cohort per round; asynchronous updates arrive one by one"
            )
        if settings.checkpoint_every > 1:
            raise ConfigError(
                f"[server] checkpoint_every = {settings.checkpoint_every} with clock.mode = "
                "'async': the buffered updates of the rounds since the last checkpoint are "
                "gone once recorded, so a restart could not run them again; use 1"
            )
        super().__init__(strategy, initial_weights, layout, settings, server, checks, transport)
        self.rule = rule
        self.arrivals: ArrivalLog | None = None
        self.models: dict[int, Vector] = {}
        """The models out with a worker, by version (FedAsync mixes in the local model)."""
        self.flights: dict[int, int] = {}
        """Each open dispatch's ticket and the model version it carries."""
        self.sent = 0
        """Models sent since the last aggregation (the downlink bytes of the round)."""
        self._blob: tuple[int, codec.Blob] | None = None

    async def run(self, channel: Channel | None = None) -> CoordinatorResult:
        """Serve and aggregate arrivals until ``rounds`` aggregations; resume if interrupted."""
        if channel is not None:
            raise ConfigError("clock.mode = 'async' runs over the gRPC transport only")
        try:
            result = await super().run()
            if self.arrivals is not None:  # finished; arrivals after the last round are unused
                self.arrivals.clear()
            return result
        finally:
            if self.arrivals is not None:
                self.arrivals.close()

    def _new_hub(self, run_id: str, events: Events) -> Hub:
        s = self.settings
        return AsyncHub(run_id, self.layout, s.heartbeat_s, s.lost_after_s, events)

    def _open_run(self) -> RunRecord:
        rec = super()._open_run()
        self.arrivals = ArrivalLog(self.settings.state_dir / "state.sqlite", rec.run_id)
        self.arrivals.drop_through(rec.last_round)  # recorded, but killed before the cleanup
        self.models = {rec.last_round: self.weights}
        return rec

    async def _sample(self, run_id: str, round_: int, first: bool) -> tuple[list[str], CohortPlan]:
        """No sampled cohort: any idle worker gets the model; before the first round, wait.

        The plan's cohort is the live nodes; its instructions go with every dispatch.
        """
        assert self.hub is not None
        s = self.settings
        if first:
            await wait_for_nodes(self.hub, s.min_nodes, s.join_timeout_s)
        nodes = self.hub.alive()
        return nodes, CohortPlan(
            instructions(self.strategy, round_, self.weights, s.client_config), nodes
        )

    async def _plain_round(
        self, round_: int, plan: CohortPlan
    ) -> tuple[Vector | None, RoundMetrics, list[str]]:
        """Hand out models and take arrivals until the buffer is full; aggregate it."""
        assert isinstance(self.hub, AsyncHub) and self.arrivals is not None
        hub, rule = self.hub, self.rule
        have = sum(a.reason is None for a in self.arrivals.of_round(round_))
        have = self._take(round_, have)
        alone_since: float | None = None
        while have < rule.buffer_size:
            await self._dispatch_idle(round_, plan.ins.config)
            for settled in await hub.settle(SETTLE_WAIT_S):
                self._settled(settled)
            have = self._take(round_, have)
            if hub.dispatches or hub.alive():
                alone_since = None
                continue
            alone_since = alone_since or time.monotonic()
            if time.monotonic() - alone_since > self.settings.rejoin_timeout_s:
                raise RejoinTimeout(
                    f"round {round_} has {have} of {rule.buffer_size} updates and no worker "
                    f"came back within [server] rejoin_timeout = "
                    f"{self.settings.rejoin_timeout_s:g} s; start the coordinator again to "
                    "resume the run with the buffered updates",
                    "no live nodes",
                )
        return await self._aggregate(round_)

    def _take(self, round_: int, have: int) -> int:
        """Assign waiting arrivals to ``round_`` in order; the usable updates it now has."""
        assert self.arrivals is not None and self.run_id is not None
        version, rule = round_ - 1, self.rule
        for a in take(
            self.arrivals.unassigned(), version, have, rule.buffer_size, rule.max_staleness
        ):
            self.arrivals.assign(a.arrival.seq, round_, a.tau, a.reason)
            if a.reason is None:
                have += 1
                continue
            if a.arrival.reason is None:  # refused here: the ledger and the log say why
                self.ledger.append(
                    self.run_id, round_, a.arrival.node, "update_rejected",
                    ticket=a.arrival.ticket, reason=a.reason,
                )  # fmt: skip
            log.warning("node=%s round=%d: failed: %s", a.arrival.node, round_, a.reason)
        return have

    async def _dispatch_idle(self, round_: int, config: Mapping[str, Scalar]) -> None:
        """Send the current model to idle live workers while fewer than ``concurrency`` train."""
        assert isinstance(self.hub, AsyncHub) and self.arrivals is not None
        hub, version = self.hub, round_ - 1
        busy = hub.busy()
        idle = [n for n in hub.alive() if n not in busy]
        for node in idle[: max(self.rule.concurrency - len(hub.dispatches), 0)]:
            ticket = self.arrivals.next_ticket()
            outgoing = Outgoing(ticket, pb.FIT, dict(config), self._model(version), self.layout)
            self.flights[ticket] = version
            await hub.dispatch(
                outgoing, node, self._sink(ticket, version), self.settings.round_timeout_s
            )
            self.sent += 1
            log.info("node=%s round=%d: model %d sent (ticket %d)", node, round_, version, ticket)

    def _model(self, version: int) -> codec.Blob:
        if self._blob is None or self._blob[0] != version:
            self._blob = (version, codec.encode_blob(self.weights, self.layout))
        return self._blob[1]

    def _sink(self, ticket: int, base: int) -> Sink:
        """Validate an arrival and write it down before the worker hears it was accepted."""

        def sink(node: str, _: int, res: DecodedResult) -> None:
            assert self.arrivals is not None
            fit, counted = self._received(res)
            validate(node, self.round_done + 1, fit, self.checks)  # before it is written down
            payload = fit.update
            if self.rule.algorithm == "fedasync":  # the local model: the base may be gone later
                payload = self.models[base] + fit.update
            self.arrivals.add(node, ticket, base, fit.num_examples, counted, payload)

        return sink

    def _settled(self, s: Settled) -> None:
        """A dispatch ended: a failure is an arrival too (the result is already written)."""
        assert self.arrivals is not None
        base = self.flights.pop(s.ticket)
        if s.failure is not None:
            self.arrivals.add(s.node, s.ticket, base, reason=s.failure)
        self._release_models()

    def _release_models(self) -> None:
        keep = {self.round_done, *self.flights.values()}
        self.models = {v: w for v, w in self.models.items() if v in keep}

    async def _aggregate(self, round_: int) -> tuple[Vector | None, RoundMetrics, list[str]]:
        """The round's buffer, each update weighted by its staleness, through the strategy."""
        assert self.arrivals is not None
        rows = self.arrivals.of_round(round_)
        used = [a for a in rows if a.reason is None]
        failures = [Failure(a.node, a.reason) for a in rows if a.reason is not None]
        d = self.layout.size
        buffer = UpdateBuffer(len(used), d, self.strategy.keep_rows, self.settings.max_weight_share)
        for a in used:
            assert a.payload is not None and a.tau is not None
            delta = a.payload - self.weights if self.rule.algorithm == "fedasync" else a.payload
            buffer.add(a.node, weighted_update(self.rule, a.tau, delta), a.num_examples, a.metrics)
        new = await asyncio.to_thread(
            self.strategy.aggregate, round_, self.weights, buffer, failures
        )
        metrics = RoundMetrics(round_, participants=len(buffer), failures=failures)
        metrics.train_loss = buffer.mean_metric("train_loss")
        metrics.extra.update(
            round_bytes(uplink_counts(buffer.metrics, d), [dense_bytes(d)] * self.sent)
        )
        taus = [a.tau for a in used if a.tau is not None]
        metrics.extra.update(
            staleness_mean=float(np.mean(taus)) if taus else 0.0,
            staleness_max=max(taus, default=0),
            updates=[{"node": a.node, "ticket": a.ticket, "staleness": a.tau} for a in used],
        )
        return new, metrics, list(buffer.nodes)

    def _record(self, run_id: str, round_: int, nodes: Sequence[str], m: RoundMetrics) -> None:
        """Record the round as the ``Coordinator`` does, then let go of its arrivals."""
        super()._record(run_id, round_, nodes, m)
        assert self.arrivals is not None and isinstance(self.hub, AsyncHub)
        self.arrivals.drop_through(round_)
        self.models[round_] = self.weights
        self._release_models()
        self.hub.last_round = round_
        self.sent = 0
