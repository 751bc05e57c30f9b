"""The coordinator: drives rounds with a Strategy over the gRPC endpoint, and survives restarts.

Per round: wait for nodes, sample, send the model, collect results until ``round_timeout`` (or
all are in, or the missing ones are lost), validate each update on arrival into an
``UpdateBuffer``, aggregate (the strategy keeps the model bitwise unchanged below
``min_clients``), write the checkpoint atomically, then mark the round completed in SQLite.
A restarted coordinator resumes from the last completed round of the unfinished run whose
checkpoint verifies (``murmura.node.resume``). ``keep_last`` bounds the disk: once a round is
recorded, all but the newest ``keep_last`` checkpoints and round 0 are deleted.
``checkpoint_every`` k > 1 writes the checkpoint of every k-th round (and of the last); the
rounds between are recorded without one, and a restart runs them again from the newest.

The run's folder has the layout of a simulated run's (``murmura.ops.run_dir``):
``config.toml`` when the run opens, ``metrics.jsonl`` per round, and at the end
``summary.json``, ``accuracy.png`` and ``model.safetensors`` (the final model, with its
version, run, round and config hash in the metadata), next to ``checkpoints/``.

A round starts (SQLite, ledger, metrics) only once the strategy could sample it: with too few
live nodes (none, or fewer than the strategy's ``min_clients``) the coordinator waits for
nodes to join or come back, up to ``rejoin_timeout_s``, then raises ``RejoinTimeout`` and
leaves the run unfinished (no summary, no SHUTDOWN to the workers), so a restarted
coordinator resumes it at that round.

With ``[stats] enabled``, a statistics phase (``murmura.analytics.grpc_round``) runs before
the first round of the run and writes ``stats.json`` into its folder; with ``[stats]
standardise`` every FIT instruction then carries the scaling fitted from it.

The checkpoint carries the strategy's state with the model (``murmura.node.checkpoint``), so a
resumed run keeps its privacy accountant (epsilon), clip norm and optimiser moments. Like the
simulation runtime (``murmura.strategy.hooks``), a ``Budgeted`` strategy's ``round_metrics``
(epsilon) go into every round's metrics, and the run ends before a round that ``should_stop``;
``summary.json`` then repeats the last epsilon.

In the rounds that are evaluated, after the central evaluation (if the strategy has a test
set), a ``FederatedEvaluator`` strategy's sampled workers evaluate the new model on their own
held-out data (``murmura.node.federated_eval``); the round's metrics line and
``summary.json`` carry the federated figures, the only ones when the coordinator has no test
set.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.analytics.federation import StatsPlan
from murmura.analytics.grpc_round import statistics_phase, wait_for_nodes
from murmura.compress.accounting import (
    BYTES_DOWN,
    BYTES_UP,
    dense_bytes,
    downlink_counts,
    round_bytes,
    uplink_counts,
)
from murmura.engine.run_loop import (
    checkpoint_due,
    evaluates,
    is_final,
    planned_rounds,
    record_evaluation,
)
from murmura.engine.server_round import CohortPlan, admit, plan_cohort
from murmura.errors import ConfigError, MurmuraError, RejoinTimeout
from murmura.node import progress
from murmura.node.checkpoint import (
    checkpoint_path,
    prune_checkpoints,
    restore_strategy_state,
    strategy_state,
    weights_sha256,
    write_checkpoint,
)
from murmura.node.downlink import DownlinkPlan, HeldModels
from murmura.node.federated_eval import evaluate_round
from murmura.node.monitoring import Monitor
from murmura.node.resume import prepare_state_dir, resume_run
from murmura.node.secagg_coordinator import SecureRounds, SecureTiming
from murmura.node.state import RunRecord, StateStore
from murmura.node.tracking import open_tracker
from murmura.ops.audit import AuditLedger
from murmura.ops.metrics_http import MetricsEndpoint
from murmura.ops.run_dir import model_metadata, read_metrics, write_config, write_outputs
from murmura.ops.tracked_run import end_tracking
from murmura.ops.tracking import MlflowTracker
from murmura.privacy.budget import privacy_summary
from murmura.privacy.secagg import SecAggResult
from murmura.storage import file_sha256
from murmura.strategy.base import Strategy
from murmura.strategy.evaluation import federated_summary
from murmura.strategy.hooks import budget_metrics, budget_stops
from murmura.strategy.secure import SecureAggregation
from murmura.transport import codec
from murmura.transport.base import DOWNLINK, SECAGG, Serving
from murmura.transport.channel import Channel
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Events, Hub, Outgoing, RoundOutcome
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.registry import DEFAULT as DEFAULT_TRANSPORT
from murmura.transport.registry import refuse_missing
from murmura.transport.secagg_exchange import SecAggExchange
from murmura.transport.secagg_service import SECAGG_CONFIG_KEY, secagg_handlers
from murmura.transport.streams import DecodedResult
from murmura.types import Failure, FitRes, Layout, RoundMetrics, Scalar, Vector
from murmura.validation import Check, default_checks

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CoordinatorSettings:
    """How the coordinator runs rounds and where it keeps its state."""

    state_dir: Path
    rounds: int = 10
    run_name: str = "murmura"
    round_timeout_s: float = 60.0
    min_nodes: int = 1
    """Nodes to wait for (up to ``join_timeout_s``) before this process's first round."""
    join_timeout_s: float = 60.0
    rejoin_timeout_s: float = 600.0
    """How long a round waits for enough live nodes to sample; then ``RejoinTimeout``.

    0: stop at once. The run is left unfinished, so a restarted coordinator resumes it.
    """
    heartbeat_s: float = 1.0
    lost_after_s: float = 5.0
    evaluate_every: int = 1
    client_config: Mapping[str, Scalar] = field(default_factory=dict)
    """Sent with every FIT instruction (local hyper-parameters), under the strategy's own."""
    config: Mapping[str, object] = field(default_factory=dict)
    """The resolved run config, stored with the run."""
    shutdown_grace_s: float = 2.0
    secagg_stage_timeout_s: float = 30.0
    """Deadline of each secure aggregation step after advertise (that one has the round's)."""
    metrics: MetricsEndpoint | None = None
    """Where to serve Prometheus ``/metrics`` while the run lasts; None: not served."""
    max_weight_share: float | None = None
    """``[strategy] max_weight_share``: no node's weight above this share of the round's total."""
    keep_last: int = 0
    """Round checkpoints kept on disk (the newest, plus round 0); 0: keep every round's."""
    checkpoint_every: int = 1
    """Write the checkpoint of every k-th round and of the last; a restart reruns the others."""
    new_run: bool = False
    """``--new-run``: start a new run even if one is unfinished."""
    resume_run_id: str | None = None
    """``--run-id``: resume this unfinished run (a finished or unknown id is a ``ConfigError``)."""
    statistics: StatsPlan | None = None
    """``[stats] enabled``: a statistics phase before this run's first round (``stats.json``)."""
    standardise: Callable[[Path], Mapping[str, Scalar]] | None = None
    """``[stats] standardise``: FIT config entries fitted from the run folder's ``stats.json``."""
    downlink: DownlinkPlan | None = None
    """``[compression] downlink``: each worker's model as a delta (``murmura.node.downlink``)."""


@dataclass(slots=True)
class CoordinatorResult:
    """The outcome of ``Coordinator.run``: final weights, this process's rounds, the summary."""

    run_id: str
    weights: Vector
    rounds: list[RoundMetrics]
    summary: dict[str, object] = field(default_factory=dict)


def _budget_spent(round_: int) -> None:
    log.warning(
        "node=coordinator round=%d: would exceed the privacy budget; the run ends after round %d",
        round_,
        round_ - 1,
    )


def run_dir(state_dir: Path, run_id: str) -> Path:
    """A run's folder: ``checkpoints/``, ``metrics.jsonl``; ``state_dir/latest`` names it."""
    return state_dir / "runs" / run_id


class Coordinator:
    """Runs a federated training run with a Strategy over its transport (gRPC by default)."""

    def __init__(
        self,
        strategy: Strategy,
        initial_weights: Vector,
        layout: Layout,
        settings: CoordinatorSettings,
        server: ServerOptions,
        checks: Sequence[Check] | None = None,
        transport: str = DEFAULT_TRANSPORT,
    ) -> None:
        needs = {SECAGG} if isinstance(strategy, SecureAggregation) else set()
        if settings.downlink is not None:
            needs.add(DOWNLINK)
        self.transport = refuse_missing(transport, needs)
        """Serves the nodes (``murmura.transport.registry``: ``[server] transport``)."""
        if settings.max_weight_share is not None and isinstance(strategy, SecureAggregation):
            raise ConfigError(
                "strategy.max_weight_share cannot be honoured under secure aggregation: the "
                "coordinator only sees the sum of the round's updates, never one weight"
            )
        self.strategy, self.layout, self.settings, self.server = strategy, layout, settings, server
        self.weights = np.asarray(initial_weights, dtype=np.float32).copy()
        self.checks = list(checks) if checks is not None else default_checks(layout.size)
        prepare_state_dir(settings.state_dir)
        self.state = StateStore(settings.state_dir / "state.sqlite")
        try:
            self.ledger = AuditLedger.open(settings.state_dir)
        except BaseException:
            self.state.close()
            raise
        self.monitor = Monitor(settings.metrics)
        self.hub: Channel | None = None
        self.run_id: str | None = None
        self.secure: SecureRounds | None = None
        self.tracker: MlflowTracker | None = None
        self.run_path = settings.state_dir
        self.port = 0
        self.node = "coordinator"
        """Who speaks in the progress lines (an edge's name for an edge)."""
        self.planned: int | None = settings.rounds
        """The run's rounds as the round lines show them (None: the parent decides)."""
        self.round_done = 0
        """The last round recorded (resumed from, or completed by this process)."""
        self.downlink = None if settings.downlink is None else HeldModels(settings.downlink)

    async def run(self, channel: Channel | None = None) -> CoordinatorResult:
        """Serve and run every remaining round of the run; resume if one was interrupted.

        ``channel``: reach the nodes through it (``transport.channel.LocalChannel``) instead of
        serving gRPC; the rounds, state, ledger and checkpoints are the same.
        """
        s = self.settings
        try:
            rec = self._open_run()
            self.tracker = open_tracker(self.state, s.config, self.run_path, rec.run_id)
        except BaseException:
            self.state.close()
            self.ledger.close()
            raise
        start = rec.last_round + 1
        self.run_id = rec.run_id
        events = self.monitor.events(self.ledger.recorder(rec.run_id))
        hub = self._new_hub(rec.run_id, events)
        self.monitor.metrics.start_run(rec.run_id, s.rounds, rec.last_round)
        hub.last_round = rec.last_round
        server: Serving | None = None
        if channel is None:
            extra = []
            if isinstance(self.strategy, SecureAggregation):
                exchange = SecAggExchange(rec.run_id)
                timing = SecureTiming(s.round_timeout_s, s.secagg_stage_timeout_s)
                self.secure = SecureRounds(self.strategy, hub, exchange, timing)
                extra.append(secagg_handlers(exchange))
            server = await self.transport.serve(hub, self.server, extra)
            self.port, channel = server.port, server.channel
            (s.state_dir / "address").write_text(f"{self.server.host}:{self.port}\n")
            address = f"{self.server.host}:{self.port}"
            progress.listening(self.node, address, self.server.credentials is not None, rec.run_id)
        elif isinstance(self.strategy, SecureAggregation):
            raise ConfigError("secure aggregation runs its stages over the gRPC transport only")
        elif self.downlink is not None:
            raise ConfigError("[compression] downlink runs over the gRPC transport only")
        self.hub = channel
        done: list[RoundMetrics] = []
        try:
            await self.monitor.start(self.hub, s.heartbeat_s)
            if s.statistics is not None and start <= s.rounds:
                nodes = await wait_for_nodes(self.hub, s.min_nodes, s.join_timeout_s)
                await statistics_phase(
                    self.hub, s.statistics, start, self.run_path, nodes, s.round_timeout_s
                )
            if s.standardise is not None and start <= s.rounds:  # the same scaling to every site
                fitted = await asyncio.to_thread(s.standardise, self.run_path)
                self.settings = replace(s, client_config={**s.client_config, **fitted})
            for r, _ in planned_rounds(start, s.rounds, self._stops, _budget_spent):
                done.append(await self.run_round(rec.run_id, r, first=r == start))
            summary = self._write_outputs(rec.run_id)
            self.state.finish_run(rec.run_id)
            await self.hub.finish()
            await asyncio.sleep(s.shutdown_grace_s)  # let workers pull SHUTDOWN
            end_tracking(self.tracker, s.config, self.run_path)  # [tracking]: artifacts, registry
        finally:
            if self.tracker is not None:
                self.tracker.stop()  # unless ended: a restart resumes the MLflow run
            await self.monitor.stop()
            if server is not None:
                await server.stop()
            try:  # the counts of refusals and repeats still in a window
                hub.flush_repeats()
            finally:
                self.state.close()
                self.ledger.close()
        return CoordinatorResult(rec.run_id, self.weights, done, summary)

    def _new_hub(self, run_id: str, events: Events) -> Hub:
        """The gRPC endpoint's round state (the async coordinator hands out per-worker models)."""
        return Hub(run_id, self.settings.heartbeat_s, self.settings.lost_after_s, events)

    def _stops(self, round_: int) -> bool:
        """Whether running ``round_`` would exceed the strategy's privacy budget."""
        return budget_stops(self.strategy, round_)

    def _open_run(self) -> RunRecord:
        """Open or resume the run: restore the model and strategy state, or save round 0."""
        s = self.settings
        rec = self.state.open_run(
            s.run_name,
            f"{s.run_name}-{secrets.token_hex(4)}",
            dict(s.config),
            new_run=s.new_run,
            resume=s.resume_run_id,
        )
        if rec.note:
            log.warning("node=coordinator: %s", rec.note)
        self.run_path = run_dir(s.state_dir, rec.run_id)
        self.run_path.mkdir(parents=True, exist_ok=True)
        (s.state_dir / "latest").write_text(rec.run_id + "\n")
        write_config(self.run_path, s.config)
        if rec.last_round == 0:
            initial = strategy_state(self.strategy)
            write_checkpoint(checkpoint_path(self.run_path, 0), self.weights, self.layout, initial)
            progress.run_opened(self.node, rec.run_id, rec.last_round, s.rounds, resumed=False)
            return rec
        got = resume_run(self.state, rec.run_id, self.run_path, self.layout)
        self.weights = got.weights
        restore_strategy_state(self.strategy, got.state, str(got.checkpoint))
        if self.downlink is not None:  # what each worker holds: deltas go on after a restart
            self.downlink.load(self.run_path, self.layout.size)
        self.round_done = got.round
        progress.run_opened(self.node, rec.run_id, got.round, s.rounds, resumed=True)
        return replace(rec, last_round=got.round, checkpoint=str(got.checkpoint))

    def _write_outputs(self, run_id: str, status: str = "complete") -> dict[str, object]:
        """Write the run folder's final outputs; the summary covers every completed round.

        ``status`` "interrupted" writes them for a run stopped early (it stays resumable).
        """
        rows = [r for r in self.state.rounds(run_id) if r["status"] == "completed"]
        last: dict[str, object] = rows[-1]["metrics"] if rows else {}
        tail = [RoundMetrics(rows[-1]["round"], 0, extra=dict(last))] if rows else []
        summary: dict[str, object] = {
            "run_id": run_id,
            "status": status,
            "rounds": len(rows),
            "planned_rounds": self.settings.rounds,
            "final_test_accuracy": last.get("test_accuracy"),
            "final_test_loss": last.get("test_loss"),
            "failures": sum(len(r["failures"]) for r in rows),
            "audit_head": str(self.ledger.head) if self.ledger.head else None,
            "layout": self.layout.to_dict(),
            **privacy_summary(tail, self.settings.rounds),
            **federated_summary(last),
        }
        done = rows[-1]["round"] if rows else 0
        meta = model_metadata(run_id, done, self.settings.config)
        history = read_metrics(self.run_path / "metrics.jsonl", done)
        write_outputs(self.run_path, self.weights, self.layout, history, summary, meta)
        return summary

    async def _sample(self, run_id: str, round_: int, first: bool) -> tuple[list[str], CohortPlan]:
        """(connected nodes, the round's plan), once the strategy can sample the live nodes.

        The plan is the engine's (``plan_cohort``: sample, then configure, the run's client
        config under the strategy's own).

        Before this process's first round, waits up to ``join_timeout_s`` for ``min_nodes``.
        Then, while there is no live node or the strategy cannot sample them (fewer than its
        ``min_clients``), waits for nodes to join or come back, up to ``rejoin_timeout_s``;
        past that, ``RejoinTimeout``: the round was never started.
        """
        assert self.hub is not None
        s = self.settings
        deadline = time.monotonic() + s.join_timeout_s
        shown = -1
        while first and len(self.hub.alive()) < s.min_nodes and time.monotonic() < deadline:
            joined = len(self.hub.alive())
            if joined != shown:
                shown = joined
                progress.waiting(self.node, run_id, round_, s.min_nodes, joined, "workers")
            await self.hub.wait_for_join(min(1.0, deadline - time.monotonic()))
        deadline = time.monotonic() + s.rejoin_timeout_s
        waiting = False
        while True:
            nodes = self.hub.alive()
            try:
                if not nodes:
                    raise MurmuraError("no live nodes")
                plan = plan_cohort(self.strategy, round_, nodes, self.weights, s.client_config)
            except (MurmuraError, ValueError) as exc:
                why = str(exc)
            else:
                log.info("node=coordinator round=%d: %d nodes connected", round_, len(nodes))
                if waiting:
                    log.warning("node=coordinator round=%d: nodes are back: %s", round_, nodes)
                return nodes, plan
            left = deadline - time.monotonic()
            if left <= 0:
                raise RejoinTimeout(
                    f"cannot sample round {round_} ({why}) and no node came back within "
                    f"[server] rejoin_timeout = {s.rejoin_timeout_s:g} s; run {run_id} is left "
                    f"unfinished at round {round_ - 1}: start the coordinator again to resume it",
                    why,
                )
            if not waiting:
                waiting = True
                log.warning(
                    "node=coordinator round=%d: cannot sample (%s); waiting up to %g s for "
                    "nodes to rejoin",
                    round_, why, s.rejoin_timeout_s,
                )  # fmt: skip
            await self.hub.wait_for_join(min(1.0, left))

    async def run_round(self, run_id: str, round_: int, first: bool = False) -> RoundMetrics:
        """One round over the network; its checkpoint is on disk before it counts as completed.

        Raises ``RejoinTimeout`` (nothing recorded) when the round cannot be sampled in time.
        """
        assert self.hub is not None
        nodes, plan = await self._sample(run_id, round_, first)  # nothing recorded before
        t0 = time.perf_counter()
        self.state.start_round(run_id, round_)
        self.monitor.metrics.round_started(round_)
        self.ledger.append(
            run_id, round_, "coordinator", "round_start", connected=len(nodes),
            cohort=len(plan.cohort),
        )  # fmt: skip
        if self.secure is not None:
            new, metrics, included = await self._secure_round(round_, plan)
        else:
            new, metrics, included = await self._plain_round(round_, plan)
        if new is not None:
            self.weights = np.asarray(new, dtype=np.float32)
        metrics.extra.update(budget_metrics(self.strategy, round_))
        final = is_final(round_, round_ == self.settings.rounds, self._stops)
        if evaluates(round_, self.settings.evaluate_every, final):
            ev = await asyncio.to_thread(self.strategy.evaluate, round_, self.weights)
            if ev is not None:
                record_evaluation(metrics, ev)
            await evaluate_round(
                self.hub, self.strategy, round_, self.weights, self.layout,
                self.settings.round_timeout_s, metrics,
            )  # fmt: skip
        metrics.seconds = time.perf_counter() - t0
        self.ledger.append(
            run_id,
            round_,
            "coordinator",
            "round_end",
            participants=len(included),
            failures=len(metrics.failures),
            model_sha256=codec.encode_blob(self.weights, self.layout).header.sha256.hex(),
        )  # before the checkpoint, which pins the ledger's head
        self._record(run_id, round_, included, metrics)
        self.monitor.metrics.round_finished(metrics)
        return metrics

    async def _plain_round(
        self, round_: int, plan: CohortPlan
    ) -> tuple[Vector | None, RoundMetrics, list[str]]:
        """Collect plaintext updates and aggregate: (new model or None, metrics, contributors)."""
        cohort = plan.cohort
        buffer = UpdateBuffer(
            len(cohort), self.layout.size, self.strategy.keep_rows, self.settings.max_weight_share
        )
        outcome = await self._collect(plan, buffer)
        failures = [Failure(n, why) for n, why in sorted(outcome.failures.items())]
        for f in failures:
            log.warning("node=%s round=%d: failed: %s", f.node, round_, f.reason)
        new = await asyncio.to_thread(
            self.strategy.aggregate, round_, self.weights, buffer, failures
        )
        metrics = RoundMetrics(round_, participants=len(buffer), failures=failures)
        metrics.train_loss = buffer.mean_metric("train_loss")
        d = self.layout.size  # counted on the wire, as the simulation computes it
        ups = uplink_counts(buffer.metrics, d)
        metrics.extra.update(round_bytes(ups, downlink_counts(buffer.metrics, d, len(cohort))))
        return new, metrics, list(buffer.nodes)

    async def _secure_round(
        self, round_: int, plan: CohortPlan
    ) -> tuple[Vector | None, RoundMetrics, list[str]]:
        """SecAgg+ over the cohort; the strategy's server update applies the unmasked mean."""
        assert self.secure is not None
        cohort = sorted(plan.cohort)
        config = {**plan.ins.config, SECAGG_CONFIG_KEY: True}
        blob = codec.encode_blob(self.weights, self.layout)
        outgoing = Outgoing(round_, pb.FIT, config, blob, self.layout)
        log.info("node=coordinator round=%d: secure round sent to %d nodes", round_, len(cohort))
        outcome = await self.secure.run(outgoing, cohort, self.layout.size)
        strategy = self.secure.strategy
        new = await asyncio.to_thread(strategy.conclude, round_, self.weights, cohort, outcome)
        metrics = RoundMetrics(round_, participants=0)
        strategy.report(round_, metrics)
        for f in metrics.failures:
            log.warning("node=%s round=%d: failed: %s", f.node, round_, f.reason)
        if not isinstance(outcome, SecAggResult):
            return new, metrics, []
        return new, metrics, [cohort[u] for u in outcome.survivors]

    async def _collect(self, plan: CohortPlan, buffer: UpdateBuffer) -> RoundOutcome:
        """Send the plan's model and config; ``admit`` each update into ``buffer`` on arrival."""
        assert self.hub is not None
        round_, cohort, config = plan.ins.round, plan.cohort, plan.ins.config
        if not cohort:
            return RoundOutcome(round_, {}, {})
        blob = codec.encode_blob(plan.ins.weights, self.layout)
        held, weights, layout = self.downlink, plan.ins.weights, self.layout

        def personal(node: str, digest: bytes) -> tuple[codec.Blob, bytes]:
            assert held is not None
            return held.instruction(node, round_, weights, layout, digest)

        outgoing = Outgoing(
            round_, pb.FIT, dict(config), blob, self.layout, None if held is None else personal
        )
        dense = float(dense_bytes(self.layout.size))

        def sink(node: str, r: int, res: DecodedResult) -> None:
            fit, counted = self._received(res)
            counted[BYTES_DOWN] = dense if held is None else float(held.sent.get((node, r), dense))
            admit(r, node, fit, buffer, self.checks, counted)  # a rejection: the hub's failure

        log.info("node=coordinator round=%d: sent to %d nodes", round_, len(cohort))
        await self.hub.open_round(outgoing, frozenset(cohort), sink)
        return await self.hub.collect(self.settings.round_timeout_s)

    def _received(self, res: DecodedResult) -> tuple[FitRes, dict[str, float]]:
        """A FIT result as received (not yet validated), and its metrics with the bytes counted."""
        if res.update is None:
            raise ValueError("FIT result without an update")
        self.monitor.metrics.update_received(res.update.nbytes)  # read in full, then checked
        fit = FitRes(res.update, res.num_examples, res.metrics)
        return fit, {**fit.metrics, BYTES_UP: float(res.wire_bytes)}  # ours, not the worker's

    def _record(self, run_id: str, round_: int, nodes: Sequence[str], m: RoundMetrics) -> None:
        """Write the checkpoint (model and strategy state), the metrics line, then commit.

        A crash before the commit redoes the round: its metrics line may appear twice, never
        zero times.
        """
        path: Path | None = checkpoint_path(self.run_path, round_)
        final = is_final(round_, round_ == self.settings.rounds, self._stops)
        if not checkpoint_due(round_, self.settings.checkpoint_every, final):
            path = None  # recorded without a checkpoint: a restart runs it again
            digest = weights_sha256(self.weights)
        else:
            assert path is not None
            state = strategy_state(self.strategy)  # after aggregate: what round_ + 1 starts from
            digest = write_checkpoint(path, self.weights, self.layout, state, self.ledger.pinned())
            if self.downlink is not None:
                self.downlink.save(self.run_path)
        with open(self.run_path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(m.to_json()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.state.complete_round(
            run_id,
            round_,
            participants=len(nodes),
            failures=[{"node": f.node, "reason": f.reason} for f in m.failures],
            checkpoint=None if path is None else str(path),
            model_sha256=digest,
            metrics=m.to_json(),
            file_sha256=None if path is None else file_sha256(path),
        )
        for node in nodes:
            self.state.seen(run_id, node, completed_round=True)
        if self.tracker is not None:
            self.tracker.log_round(m.to_json())
        if path is not None:  # after the round is recorded
            prune_checkpoints(path.parent, self.settings.keep_last)
        self.round_done = round_
        progress.round_done(self.node, run_id, m, self.planned)
