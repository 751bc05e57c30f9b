"""Coordinator-side round state shared by the transport handlers.

Who is connected, what each node must do next, and which results a round has. No gRPC here;
the server maps ``Refused`` codes to statuses.

Every result is bound to (run, round, node): a result for another run, a closed round, a node
that was not sampled or an id other than the certificate's is refused; a second copy of an
accepted result is acknowledged as a duplicate and never counted twice. A round may open
twice, for FIT and then for EVALUATE (federated evaluation); a result of the other kind than
the open one is refused as stale. A result that carries the worker's error (its fit or
evaluate raised) passes the same checks and is that node's answer: the node is a failure of
the round at once ("worker error: ..."), so the round need not wait for its deadline.

What the endpoint sees (joins, refusals, models sent, updates received or rejected) goes to an
``Events`` callback: the coordinator connects it to its audit ledger; the transport itself
keeps no such record. Events a caller can repeat at will (refusals, joins, duplicates, a model
sent again) pass through a ``RepeatLimiter``: the first of a window is reported, the repeats
are counted and reported as one ``repeated`` event when the window closes (``flush_repeats``
at shutdown). A node has one Pull at a time and is sent a round's model a few times at most
(``PullSlots``); only the first is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from murmura.transport import codec
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.repeats import PullSlots, Repeat, RepeatLimiter
from murmura.transport.streams import DecodedResult
from murmura.types import Layout, Scalar

log = logging.getLogger(__name__)

Sink = Callable[[str, int, DecodedResult], None]
"""Takes a decoded result as it arrives (validate + accumulate); raising rejects it."""

Personal = Callable[[str, bytes], tuple[codec.Blob, bytes]]
"""``(node, digest of the model it holds) -> (its blob, the base digest of a delta or b"")``."""

Events = Callable[[str, str, int, Mapping[str, Scalar]], None]
"""Takes ``(event, node, round, details)``: ``join``, ``refuse``, ``model_sent``, ..."""


class Refused(Exception):
    """A request the hub will not serve; ``code`` names a gRPC status.

    ``event`` is what the server reports it as; None when the hub has reported it already.
    """

    def __init__(self, code: str, reason: str, event: str | None = "refuse") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.event = event


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One round's instruction, shared by every sampled node."""

    round: int
    kind: int
    config: dict[str, Scalar]
    blob: codec.Blob | None
    layout: Layout | None = None
    """The layout every returned update must have (None: not checked here)."""
    personal: Personal | None = None
    """Each node's own model blob (a compressed downlink), instead of ``blob``."""


@dataclass(slots=True)
class RoundState:
    """The open round: its targets, what arrived, and who failed and why."""

    outgoing: Outgoing
    targets: frozenset[str]
    sink: Sink | None = None
    results: dict[str, DecodedResult] = field(default_factory=dict)
    """Results kept whole only when the round has no sink; else their update is dropped."""
    failures: dict[str, str] = field(default_factory=dict)
    reported: dict[str, DecodedResult] = field(default_factory=dict)
    """Results that carried the worker's error (also in ``failures``): tell copies from replays."""
    last_error: dict[str, str] = field(default_factory=dict)
    uploading: set[str] = field(default_factory=set)
    open: bool = True

    @property
    def round(self) -> int:
        """Number of this round."""
        return self.outgoing.round

    def complete(self) -> bool:
        """Return whether every target has either a result or a recorded failure."""
        return len(self.results) + len(self.failures) >= len(self.targets)


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What a closed round collected: accepted results and failures with reasons."""

    round: int
    results: dict[str, DecodedResult]
    failures: dict[str, str]


class Hub:
    """Shared state between the coordinator loop and the transport handlers."""

    def __init__(
        self,
        run_id: str,
        heartbeat_s: float = 2.0,
        lost_after_s: float = 10.0,
        events: Events | None = None,
    ) -> None:
        self.run_id = run_id
        self.events = events
        self.heartbeat_s = heartbeat_s
        self.lost_after_s = lost_after_s
        self.last_seen: dict[str, float] = {}
        self.links_down: dict[str, float] = {}
        """When each node's waiting call was last cut from below (monotonic time)."""
        self.current: RoundState | None = None
        self.last_round = 0
        self.finished = False
        self.counters: Counter[str] = Counter()
        self.repeats = RepeatLimiter()
        self.pulls = PullSlots()
        self._changed = asyncio.Condition()
        self._joined = asyncio.Event()
        """Set when a node joins or comes back after being lost (``wait_for_join``)."""

    def record(self, event: str, node: str, round_: int, **details: Scalar) -> None:
        """Report an event to the ``events`` callback, if there is one."""
        self._report(self.repeats.closed())
        if self.events is not None:
            self.events(event, node, round_, details)

    def record_once(self, event: str, node: str, round_: int, kind: str, **details: Scalar) -> bool:
        """Report the first ``event`` of its (node, kind) window, count a repeat; True if reported.

        The caller logs only when this returns True, so a flood costs one line and one record.
        """
        if not self.repeats.first(node, f"{event}:{kind}", {"repeat_of": event, **details}):
            return False
        self.record(event, node, round_, **details)
        return True

    def flush_repeats(self) -> None:
        """Close every window of repeats now and report their counts (at shutdown)."""
        self._report(self.repeats.drain())

    def _report(self, repeats: list[Repeat]) -> None:
        for rep in repeats:
            log.warning("node=%s round=%d: %s", rep.identity, self.round_now(), rep)
            if self.events is not None:
                summary = rep.summary(self.repeats.window_s)
                self.events("repeated", rep.identity, self.round_now(), summary)

    # -- membership -------------------------------------------------------------------
    def touch(self, node: str) -> None:
        """Record that ``node`` is alive now."""
        now = time.monotonic()
        last = self.last_seen.get(node)
        if last is None:
            log.info("node=%s round=%d: joined", node, self.last_round)
        if last is None or now - last > self.lost_after_s:
            self._joined.set()
        self.last_seen[node] = now

    async def wait_for_join(self, timeout_s: float) -> None:
        """Return when a node joins or comes back after being lost, or after ``timeout_s``."""
        self._joined.clear()
        try:
            await asyncio.wait_for(self._joined.wait(), max(timeout_s, 0.0))
        except TimeoutError:
            pass

    def link_down(self, node: str, why: str) -> None:
        """Record that a call of ``node`` was cut (keepalive closed the link, or the peer left)."""
        self.links_down[node] = time.monotonic()
        self.counters["links_down"] += 1
        log.warning("node=%s round=%d: link down: %s", node, self.round_now(), why)

    def alive(self) -> list[str]:
        """Nodes heard from within ``lost_after_s``, sorted."""
        now = time.monotonic()
        return sorted(n for n, t in self.last_seen.items() if now - t <= self.lost_after_s)

    def round_now(self) -> int:
        """Return the open round, or the last closed one."""
        return self.current.round if self.current is not None else self.last_round

    # -- instructions -----------------------------------------------------------------
    async def open_round(
        self, outgoing: Outgoing, targets: frozenset[str], sink: Sink | None = None
    ) -> None:
        """Open a round: ``targets`` get ``outgoing`` on their next pull; results go to ``sink``."""
        self._report(self.repeats.closed())  # windows close at least once a round
        async with self._changed:
            self.current = RoundState(outgoing, targets, sink)
            self._changed.notify_all()

    def _state_of(self, round_: int) -> RoundState | None:
        """The round a result for ``round_`` belongs to, if it is the current one."""
        cur = self.current
        return cur if cur is not None and cur.round == round_ else None

    def _state_for(self, node: str) -> RoundState | None:
        """The round that waits for ``node``'s result, if any."""
        return self.current

    def _pending(self, node: str) -> Outgoing | None:
        # Decided by this hub's own record only: a worker's "last round done" may refer to a
        # round a restarted coordinator has reopened, and that round must be trained again.
        cur = self.current
        if cur is None or not cur.open or node not in cur.targets:
            return None
        if node in cur.results or node in cur.failures or node in cur.uploading:
            return None
        if not self.pulls.may_send(node, cur.round, cur.outgoing.kind):
            return None  # fetched the model enough times: waits as if it had answered
        return cur.outgoing

    async def next_instruction(self, node: str, wait_s: float) -> Outgoing | None:
        """Long-poll for the open round's instruction if ``node`` still owes a result."""
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while not self.finished:
                out = self._pending(node)
                if out is not None:
                    return out
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:  # not wait_for: cancelled while re-acquiring, it leaves the lock released
                    async with asyncio.timeout(left):
                        await self._changed.wait()
                except TimeoutError:
                    return None
        return None

    async def finish(self) -> None:
        """Mark the run over: pulls answer SHUTDOWN from now on."""
        async with self._changed:
            self.finished = True
            self._changed.notify_all()

    # -- results ----------------------------------------------------------------------
    def admit(self, node: str, h: pb.ResultHeader) -> bool:
        """Check a result header's binding; True if the node's result is already counted.

        The digest comes after the update, so the caller reads the copy and calls
        ``check_duplicate`` with it; nothing is counted twice.
        """
        if h.run_id != self.run_id:
            raise self._refuse(
                "refused_run", "FAILED_PRECONDITION", f"run {h.run_id!r} is not this run"
            )
        if h.node != node:
            raise self._refuse(
                "refused_identity",
                "PERMISSION_DENIED",
                f"result claims node {h.node!r}, certificate says {node!r}",
            )
        cur = self._state_of(h.round)
        if cur is None or not cur.open:
            raise self._refuse(
                "refused_stale",
                "FAILED_PRECONDITION",
                f"round {h.round} is not open (current round {self.round_now()})",
            )
        if h.kind != cur.outgoing.kind:  # round r's EVALUATE phase follows its FIT phase
            raise self._refuse(
                "refused_stale",
                "FAILED_PRECONDITION",
                f"a {pb.Kind.Name(h.kind)} result, but round {h.round} now collects "
                f"{pb.Kind.Name(cur.outgoing.kind)} results",
            )
        if node not in cur.targets:
            raise self._refuse(
                "refused_target", "PERMISSION_DENIED", f"node not sampled in round {h.round}"
            )
        if node in cur.results or node in cur.reported:
            return True
        if node in cur.failures:
            raise self._refuse(
                "refused_replay", "ALREADY_EXISTS", "this round's result was already refused"
            )
        if node in cur.uploading:
            raise self._refuse(
                "refused_replay", "ALREADY_EXISTS", "an upload for this round is in progress"
            )
        cur.uploading.add(node)
        return False

    def check_duplicate(self, node: str, res: DecodedResult) -> None:
        """A re-sent copy of a counted result: acknowledge it if identical, else refuse it."""
        cur = self._state_of(res.round)
        counted = None
        if cur is not None:
            counted = cur.results.get(node) or cur.reported.get(node)
        if counted is None:
            raise self._refuse(
                "refused_stale", "FAILED_PRECONDITION", f"round {res.round} closed during upload"
            )
        if counted.digest != res.digest or counted.kind != res.kind:
            raise self._refuse(
                "refused_replay", "ALREADY_EXISTS", "a different result was already counted"
            )
        self.counters["duplicates"] += 1
        kind = f"r{res.round}"
        self.record_once("update_duplicate", node, res.round, kind, blake3=res.digest.hex())

    def expected_layout(self) -> Layout | None:
        """Layout that updates for the open round must have."""
        return self.current.outgoing.layout if self.current is not None else None

    def note_error(self, node: str, error: str) -> None:
        """Remember a refused upload of a node the open round waits for (failure reason)."""
        cur = self._state_for(node)
        if cur is not None and node in cur.targets and node not in cur.results:
            cur.last_error.setdefault(node, error)

    def release(self, node: str, round_: int, error: str | None = None) -> None:
        """End an upload that did not deliver; remember why, for the failure reason."""
        cur = self._state_of(round_)
        if cur is not None:
            cur.uploading.discard(node)
            if error is not None:
                cur.last_error[node] = error

    async def deliver(
        self, node: str, res: DecodedResult, signed: Mapping[str, Scalar] | None = None
    ) -> None:
        """Validate and store a decoded result; a rejected update is recorded as a failure.

        ``signed`` (the worker's verified signature and its certificate's fingerprint) goes
        into the ``update_received`` record.
        """
        cur = self._state_of(res.round)
        if cur is None or not cur.open or cur.outgoing.kind != res.kind:
            raise self._refuse(
                "refused_stale", "FAILED_PRECONDITION", f"round {res.round} closed during upload"
            )
        cur.uploading.discard(node)
        if res.error:
            await self._worker_error(cur, node, res)
            return
        try:
            if cur.sink is not None:
                cur.sink(node, res.round, res)
        except Exception as exc:  # the validator's own error types; the reason goes to failures
            reason = getattr(exc, "reason", str(exc))
            # reported before the round can close, so it precedes the round's end
            self.record("update_rejected", node, res.round, blake3=res.digest.hex(), reason=reason)
            cur.failures[node] = f"update rejected: {reason}"
            self.counters["rejected"] += 1
            log.warning("node=%s round=%d: update rejected: %s", node, res.round, reason)
            await self._notify()
            raise Refused("INVALID_ARGUMENT", f"update rejected: {reason}", None) from None
        self.record(
            "update_received" if res.kind == pb.FIT else "result_received",
            node,
            res.round,
            blake3=res.digest.hex(),
            num_examples=res.num_examples,
            kind=pb.Kind.Name(res.kind),
            **(signed or {}),
        )
        if cur.sink is not None:  # keep only what duplicate detection needs
            res = dataclasses.replace(res, update=None)
        cur.results[node] = res
        self.counters["accepted"] += 1
        log.info("node=%s round=%d: result accepted", node, res.round)
        await self._notify()

    async def _worker_error(self, cur: RoundState, node: str, res: DecodedResult) -> None:
        """Count a result that reports the worker's error as the node's failure, at once."""
        # reported before the round can close, so it precedes the round's end
        self.record(
            "worker_error", node, res.round, blake3=res.digest.hex(),
            kind=pb.Kind.Name(res.kind), error=res.error,
        )  # fmt: skip
        cur.failures[node] = f"worker error: {res.error}"
        cur.reported[node] = res
        self.counters["worker_errors"] += 1
        log.warning(
            "node=%s round=%d: %s failed on the worker: %s",
            node, res.round, pb.Kind.Name(res.kind), res.error,
        )  # fmt: skip
        await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _refuse(self, counter: str, code: str, reason: str) -> Refused:
        self.counters[counter] += 1
        return Refused(code, reason)

    # -- closing ----------------------------------------------------------------------
    async def collect(self, timeout_s: float) -> RoundOutcome:
        """Wait until all targets answered, the rest are lost, or ``timeout_s`` passed; close."""
        cur = self.current
        if cur is None:
            raise RuntimeError("no open round")
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while not cur.complete() and time.monotonic() < deadline:
                if self._all_missing_lost(cur):
                    break
                try:  # asyncio.timeout, as in next_instruction
                    async with asyncio.timeout(min(0.25, deadline - time.monotonic())):
                        await self._changed.wait()
                except TimeoutError:
                    pass
            return self._close(cur)

    def _all_missing_lost(self, cur: RoundState) -> bool:
        alive = set(self.alive())
        missing = cur.targets - cur.results.keys() - cur.failures.keys()
        return bool(missing) and not (missing & alive) and not (missing & cur.uploading)

    def _close(self, cur: RoundState) -> RoundOutcome:
        cur.open = False
        alive = set(self.alive())
        failures = dict(cur.failures)
        for node in sorted(cur.targets - cur.results.keys() - cur.failures.keys()):
            why = "no result before the round deadline"
            if node not in alive:
                why = f"lost: no heartbeat for more than {self.lost_after_s:g} s"
            if node in cur.last_error:
                why += f" (last error: {cur.last_error[node]})"
            failures[node] = why
        self.last_round = cur.round
        self.current = None
        return RoundOutcome(cur.round, dict(cur.results), failures)
