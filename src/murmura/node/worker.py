"""A worker: wraps a Client, dials the coordinator, trains when told, and rejoins after faults.

Told STATS, it pushes its summary of its own rows (``murmura.analytics.grpc_round``).
Told to EVALUATE, it runs the client's ``evaluate`` on the sent model (its local held-out
data) and pushes the loss, example count and metrics; a client without ``evaluate`` reports 0
examples. When the client's fit or evaluate raises, the worker pushes a result that carries
only the error (the exception's type and text, bounded, no traceback), so the coordinator
lists it as failed at once instead of waiting for the round's deadline. Every FIT and EVALUATE
instruction is checked first (``murmura.node.instructions``: the task's model layout, finite
weights, known and bounded hyper-parameters); a bad one is answered the same way, with an
``InstructionRejected`` error, and the worker serves the next round.

The node's identity is its certificate, so a restarted worker (or one that reconnects after
the coordinator restarted) rejoins under the same id and picks up the next round it is sampled
for. Heartbeats run in a background thread, also while the client trains. Over TLS the worker
first checks that the node it dials holds a coordinator or edge certificate, and stops with an
``IdentityError`` otherwise, before it sends anything (``murmura.transport.dial_check``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from murmura.compress.base import spec
from murmura.compress.uplink import Uplink
from murmura.errors import InstructionRejected, MurmuraError, ProtocolError
from murmura.node import progress
from murmura.node.downlink import HeldModel
from murmura.node.instructions import InstructionLimits, check_instruction, client_layout
from murmura.node.secagg_worker import SecureRound, StepHook
from murmura.transport.base import Link
from murmura.transport.dial_check import Unreachable
from murmura.transport.grpc_client import CoordinatorLink, backoff_delays
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.secagg_service import SECAGG_CONFIG_KEY, SecAggLink
from murmura.transport.streams import DecodedInstruction, error_text
from murmura.types import EvaluateRes, FitIns, FitRes, Layout

log = logging.getLogger(__name__)

FATAL = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


class FitClient(Protocol):
    """The part of ``murmura.client.Client`` a worker needs."""

    def fit(self, ins: FitIns) -> FitRes:
        """Train from ``ins.weights`` and return the delta."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What a worker did before it stopped."""

    rounds: int
    last_round: int
    reason: str


class Worker:
    """Runs the pull -> fit -> push loop of one node until the coordinator says SHUTDOWN."""

    def __init__(
        self,
        link: Link,
        client: FitClient,
        rejoin_max_s: float = 600.0,
        on_secagg_step: StepHook | None = None,
        layout: Layout | None = None,
        limits: InstructionLimits | None = None,
        uplink: Uplink | None = None,
        downlink: HeldModel | None = None,
    ) -> None:
        self.link, self.client = link, client
        self.uplink = uplink
        """Encodes each update with the [compression] codec (None: float32)."""
        self.downlink = downlink
        """The model this worker holds, for deltas in the [compression] downlink codec."""
        self.layout = layout if layout is not None else client_layout(client)
        """The task's model: every instruction's model must have this layout (None: unknown)."""
        self.limits = limits if limits is not None else InstructionLimits()
        self.on_secagg_step = on_secagg_step
        """Observer of secure aggregation: called with (round, step) after each answer."""
        self.rejoin_max_s = rejoin_max_s
        self.after_round = 0
        self.rounds_done = 0
        self._stop = threading.Event()
        self._heartbeat_s = 1.0
        self._beat: threading.Thread | None = None

    @property
    def node(self) -> str:
        """Id of the node: its certificate's common name."""
        return self.link.node

    def stop(self) -> None:
        """Ask the loop to stop after its current step."""
        self._stop.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop, close the link and let the heartbeat thread end: no gRPC call left at exit."""
        self._stop.set()
        self.link.close()
        if self._beat is not None and self._beat.ident is not None:
            self._beat.join(timeout_s)

    def run(self) -> WorkerStats:
        """Register, then serve instructions; rejoin with backoff when the link drops."""
        delays = backoff_delays(0.5, 10.0, random.Random())
        down_since: float | None = None
        beat = self._beat = threading.Thread(target=self._heartbeats, daemon=True)
        while not self._stop.is_set():
            try:
                reply = self.link.register()
                progress.connected(self.node, self.link.target, self.link.run_id, reply.round)
                self._heartbeat_s = max(reply.heartbeat_ms / 1000, 0.1)
                if not beat.is_alive() and not beat.ident:
                    beat.start()
                down_since = None
                if self._serve():
                    return WorkerStats(self.rounds_done, self.after_round, "shutdown")
            except (grpc.RpcError, Unreachable) as exc:
                code = exc.code() if isinstance(exc, grpc.RpcError) else "UNREACHABLE"
                if code in FATAL and isinstance(exc, grpc.RpcError):
                    log.error(
                        "node=%s round=%d: refused: %s", self.node, self.after_round, exc.details()
                    )
                    self._stop.set()
                    return WorkerStats(
                        self.rounds_done, self.after_round, f"refused: {exc.details()}"
                    )
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.rejoin_max_s:
                    return WorkerStats(self.rounds_done, self.after_round, "coordinator gone")
                delay = next(delays)
                log.warning(
                    "node=%s round=%d: link error %s; rejoining in %.1f s",
                    self.node,
                    self.after_round,
                    code,
                    delay,
                )
                self._stop.wait(delay)
        return WorkerStats(self.rounds_done, self.after_round, "stopped")

    def _serve(self) -> bool:
        """Pull and handle instructions; True once the coordinator said SHUTDOWN."""
        while not self._stop.is_set():
            try:
                if self.downlink is None:
                    ins = self.link.pull(self.after_round)
                else:  # names the model it holds; a delta against it becomes the model
                    held = self.downlink
                    ins = held.receive(self.link.pull(self.after_round, held.digest, held.codec))
            except ProtocolError as exc:
                log.warning(
                    "node=%s round=%d: bad instruction: %s", self.node, self.after_round, exc
                )
                self._stop.wait(self._heartbeat_s)  # it may be sent again: no busy loop
                continue
            if ins.kind == pb.SHUTDOWN:
                log.info("node=%s round=%d: run finished", self.node, ins.round)
                return True
            if ins.kind == pb.FIT:
                self._fit(ins)
            elif ins.kind == pb.EVALUATE:
                self._evaluate(ins)
            elif ins.kind == pb.STATS:
                self._statistics(ins)
        return False

    def _checked(self, ins: DecodedInstruction) -> bool:
        """True if ``ins`` passes ``check_instruction``; else report it and return False."""
        try:
            check_instruction(ins.weights, ins.layout, ins.config, self.layout, self.limits)
        except InstructionRejected as exc:
            log.warning("node=%s round=%d: instruction rejected: %s", self.node, ins.round, exc)
            self._report_error(ins, exc)
            return False
        return True

    def _fit(self, ins: DecodedInstruction) -> None:
        if not self._checked(ins):
            return
        assert ins.weights is not None and ins.layout is not None
        log.info("node=%s round=%d: training", self.node, ins.round)
        secure = bool(ins.config.get(SECAGG_CONFIG_KEY, False))
        config = {k: v for k, v in ins.config.items() if k != SECAGG_CONFIG_KEY}
        try:
            res = self.client.fit(FitIns(ins.round, ins.weights, config))
        except Exception as exc:
            if self._stop.is_set():  # stopping (a signal): the round is abandoned, not failed
                return
            log.exception("node=%s round=%d: local training failed", self.node, ins.round)
            self._report_error(ins, exc)
            return
        if secure:  # the update leaves this process only masked
            if not isinstance(self.link, CoordinatorLink):  # its stages are gRPC calls
                self._report_error(ins, ProtocolError("secure aggregation needs the gRPC link"))
                return
            rounds = SecureRound(SecAggLink(self.link), ins.round, self._stop, self.on_secagg_step)
            self.rounds_done += int(rounds.run(res.update, res.num_examples))
            self.after_round = ins.round
            return
        try:
            reply = self.link.push(ins.round, res, ins.layout, self._wire(ins.round, res))
        except (ValueError, MurmuraError) as exc:  # the client's result does not fit the wire
            if self._stop.is_set():  # closed while it trained (a job aborted): no round to fail
                return
            log.warning("node=%s round=%d: result not sent: %s", self.node, ins.round, exc)
            self._report_error(ins, exc)
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise
            # Not advancing: if this round is (re)opened, e.g. by a restarted coordinator, the
            # next pull hands it out again; if it is over, the pull returns a newer one.
            log.warning(
                "node=%s round=%d: result refused: %s %s",
                self.node,
                ins.round,
                exc.code(),
                exc.details(),
            )
            return
        self.rounds_done += int(not reply.duplicate)
        self.after_round = ins.round
        log.info("node=%s round=%d: result delivered", self.node, ins.round)

    def _wire(self, round_: int, res: FitRes) -> tuple[str, bytes] | None:
        """(codec spec, framed bytes) of the update, or None to send it as float32."""
        if self.uplink is None:
            return None
        return spec(self.uplink.codec), self.uplink.encode(round_, res.update)

    def _evaluate(self, ins: DecodedInstruction) -> None:
        """Evaluate the sent model on local held-out data and push loss, count and metrics."""
        if not self._checked(ins):
            return
        log.info("node=%s round=%d: evaluating", self.node, ins.round)
        try:
            res = self._local_evaluation(ins)
        except Exception as exc:
            log.exception("node=%s round=%d: local evaluation failed", self.node, ins.round)
            self._report_error(ins, exc)
            return
        if self._deliver("evaluation", ins, lambda: self.link.push_evaluation(ins.round, res)):
            log.info("node=%s round=%d: evaluation delivered", self.node, ins.round)

    def _statistics(self, ins: DecodedInstruction) -> None:
        """Push this site's sums of its own rows (``murmura.analytics.grpc_round``), no row."""
        from murmura.analytics.grpc_round import site_answer

        try:
            stats, n = site_answer(self.client, ins.config)
        except Exception as exc:
            log.warning("node=%s round=%d: statistics failed: %s", self.node, ins.round, exc)
            self._report_error(ins, exc)
            return
        if self._deliver("statistics", ins, lambda: self.link.push_stats(ins.round, stats, n)):
            log.info("node=%s round=%d: statistics delivered", self.node, ins.round)

    def _local_evaluation(self, ins: DecodedInstruction) -> EvaluateRes:
        """The client's evaluation in a form the wire carries; raises if it has none."""
        assert ins.weights is not None
        evaluate = getattr(self.client, "evaluate", None)
        res = evaluate(ins.weights) if callable(evaluate) else EvaluateRes(0.0, 0)
        n = int(res.num_examples)
        if n < 0:
            raise ValueError(f"num_examples {n} is negative")
        metrics = {str(k): float(v) for k, v in res.metrics.items()}
        return EvaluateRes(float(res.loss), n, metrics)

    def _report_error(self, ins: DecodedInstruction, exc: Exception) -> None:
        """Tell the coordinator that this round's fit or evaluate raised, and move on."""
        error = error_text(exc)
        if self._deliver("error", ins, lambda: self.link.push_error(ins.round, ins.kind, error)):
            log.info("node=%s round=%d: error reported", self.node, ins.round)
        self.after_round = ins.round

    def _deliver(self, what: str, ins: DecodedInstruction, push: Callable[[], object]) -> bool:
        """Run ``push``; True if delivered. A refusal is logged (the round may be over)."""
        try:
            push()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise
            log.warning(
                "node=%s round=%d: %s refused: %s %s",
                self.node,
                ins.round,
                what,
                exc.code(),
                exc.details(),
            )
            return False
        return True

    def _heartbeats(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            try:
                if self.link.heartbeat(self.after_round).shutdown:
                    return
            except (grpc.RpcError, ProtocolError) as exc:
                log.debug(
                    "node=%s round=%d: heartbeat failed: %s", self.node, self.after_round, exc
                )
