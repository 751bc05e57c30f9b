"""Coordinator-side state of one secure aggregation round's message exchange (no gRPC here).

The node layer drives the SecAgg+ stages and decides what each node is asked; this module only
holds those requests until the node fetches them, hands the answers on, and tells the driver
when a step is complete. Payloads are opaque bytes (``murmura.privacy.secagg.messages``): the
transport knows nothing of masks or shares.

Every answer is bound to (run, round, step, node): one for another run, a round or step that
is not open, or a node that was not asked is refused; an identical second copy is acknowledged
as a duplicate, a different one refused. An answer the driver or the transport refuses (a
malformed message, a bad chunk stream) counts as the node's answer: it gets no second try and
the step does not wait for it. A step closes at its deadline, or earlier when every node asked
has answered or the missing ones are lost; answers after that are refused and the node is a
dropout for that step.

Each round has an answer size limit, set by the driver from the round's model size
(``begin``); the transport checks a declared length against it before reading the answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from murmura.transport.hub import Refused

log = logging.getLogger(__name__)

Receiver = Callable[[str, int, bytes], None]
"""Takes (node, step, payload) as an answer arrives; raising ``Refused`` rejects it."""

DEFAULT_ANSWER_BYTES = 4 << 20
"""Answer size limit of a round begun without one: what one default gRPC message carries."""


class FetchStatus(IntEnum):
    """What a fetch found; the values are those of ``SecAggStatus`` in ``secagg.proto``."""

    READY = 1
    WAIT = 2
    LEFT = 3
    ENDED = 4


@dataclass(frozen=True, slots=True)
class Fetched:
    """A fetch's answer: the status, the node's request (READY) or why not."""

    status: FetchStatus
    payload: bytes = b""
    reason: str = ""


@dataclass(slots=True)
class _Step:
    """One open (or closed) step: requests per node and the answers so far."""

    requests: Mapping[str, bytes]
    answered: dict[str, bytes] = field(default_factory=dict)
    """SHA-256 of each accepted answer: enough to spot a duplicate, no masked vectors kept."""
    rejected: dict[str, str] = field(default_factory=dict)
    """Why each refused answer was refused."""
    open: bool = True

    def missing(self) -> set[str]:
        return set(self.requests) - self.answered.keys() - self.rejected.keys()


@dataclass(slots=True)
class _Round:
    round: int
    members: frozenset[str]
    receiver: Receiver
    max_answer_bytes: int
    steps: dict[int, _Step] = field(default_factory=dict)
    ended: str | None = None


class SecAggExchange:
    """Requests waiting for nodes and answers going to the driver, for the open round."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._round: _Round | None = None
        self._changed = asyncio.Condition()

    @property
    def round(self) -> int:
        """The round of the current (or last) exchange; -1 before the first."""
        return self._round.round if self._round is not None else -1

    @property
    def max_answer_bytes(self) -> int:
        """The current round's answer size limit (the default before the first round)."""
        return self._round.max_answer_bytes if self._round is not None else DEFAULT_ANSWER_BYTES

    async def begin(self, round_: int, members: frozenset[str], receiver: Receiver,
                    max_answer_bytes: int = DEFAULT_ANSWER_BYTES) -> None:  # fmt: skip
        """Start round ``round_`` for ``members``; their answers go to ``receiver``."""
        async with self._changed:
            self._round = _Round(round_, members, receiver, max_answer_bytes)
            self._changed.notify_all()

    async def open_step(self, step: int, requests: Mapping[str, bytes]) -> None:
        """Make ``requests`` (node -> payload) fetchable; only those nodes may answer."""
        cur = self._current()
        async with self._changed:
            cur.steps[step] = _Step(dict(requests))
            self._changed.notify_all()

    async def wait_step(
        self, step: int, timeout_s: float, alive: Callable[[], list[str]]
    ) -> frozenset[str]:
        """Wait until every node asked has answered, the rest are lost, or the deadline; close.

        Returns the nodes that did not answer (dropouts at this step).
        """
        cur = self._current()
        st = cur.steps[step]
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while st.missing() and time.monotonic() < deadline:
                if not st.missing() & set(alive()):
                    break
                try:
                    left = min(0.25, deadline - time.monotonic())
                    async with asyncio.timeout(max(left, 0.0)):  # see Hub.next_instruction
                        await self._changed.wait()
                except TimeoutError:
                    pass
            st.open = False
            self._changed.notify_all()
        return frozenset(st.missing())

    async def end(self, reason: str) -> None:
        """End the round's exchange: every fetch answers ENDED with ``reason`` from now on."""
        cur = self._current()
        async with self._changed:
            cur.ended = reason
            for st in cur.steps.values():
                st.open = False
            self._changed.notify_all()

    def _current(self) -> _Round:
        if self._round is None:
            raise RuntimeError("no secure aggregation round has begun")
        return self._round

    def _bind(self, run_id: str, round_: int, node: str) -> _Round | None:
        """The round a request names, if it is the current one; refuse another run or node."""
        if run_id != self.run_id:
            raise Refused("FAILED_PRECONDITION", f"run {run_id!r} is not this run")
        cur = self._round
        if cur is None or cur.round != round_:
            return None
        if node not in cur.members:
            raise Refused("PERMISSION_DENIED", f"node not in round {round_}'s secure cohort")
        return cur

    async def fetch(self, node: str, run_id: str, round_: int, step: int, wait_s: float) -> Fetched:
        """``node``'s request for ``step``, waiting up to ``wait_s`` for the step to open."""
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while True:
                cur = self._bind(run_id, round_, node)
                if cur is None:
                    return Fetched(FetchStatus.ENDED, reason=f"round {round_} is not open")
                if cur.ended is not None:
                    return Fetched(FetchStatus.ENDED, reason=cur.ended)
                st = cur.steps.get(step)
                if st is not None:
                    return _offer(st, node, step)
                left = deadline - time.monotonic()
                if left <= 0:
                    return Fetched(FetchStatus.WAIT)
                try:
                    async with asyncio.timeout(left):  # not wait_for: see Hub.next_instruction
                        await self._changed.wait()
                except TimeoutError:
                    return Fetched(FetchStatus.WAIT)

    def admit(self, node: str, run_id: str, round_: int, step: int) -> None:
        """Refuse, before it is read, an answer the open step does not expect from ``node``."""
        self._open_step(node, run_id, round_, step)

    def _open_step(self, node: str, run_id: str, round_: int, step: int) -> tuple[_Round, _Step]:
        cur = self._bind(run_id, round_, node)
        if cur is None or cur.ended is not None:
            raise Refused("FAILED_PRECONDITION", f"round {round_} is not open")
        st = cur.steps.get(step)
        if st is None or not st.open or node not in st.requests:
            raise Refused(
                "FAILED_PRECONDITION",
                f"step {step} of round {round_} is not open for this node (a dropout there)",
            )
        return cur, st

    async def reject(self, node: str, round_: int, step: int, reason: str) -> None:
        """Count ``node``'s answer for ``step`` as refused by the transport (a bad stream).

        Nothing happens if the step is over or the node's answer was already counted.
        """
        cur = self._round
        st = cur.steps.get(step) if cur is not None and cur.round == round_ else None
        if st is None or not st.open or node not in st.requests or node in st.answered:
            return
        st.rejected.setdefault(node, reason)
        log.warning("node=%s round=%d: secagg step %d answer refused: %s",
                    node, round_, step, reason)  # fmt: skip
        await self._notify()

    def refusals(self, step: int) -> dict[str, str]:
        """The nodes whose answer for ``step`` was refused in the current round, and why."""
        st = self._current().steps.get(step)
        return dict(st.rejected) if st is not None else {}

    async def submit(self, node: str, run_id: str, round_: int, step: int, payload: bytes,
                     digest: bytes | None = None) -> bool:  # fmt: skip
        """Hand ``node``'s answer for ``step`` to the receiver; True if it is a duplicate.

        ``digest`` is the payload's SHA-256 when the caller has checked it already.
        """
        cur, st = self._open_step(node, run_id, round_, step)
        if digest is None:
            digest = hashlib.sha256(payload).digest()
        if node in st.answered:
            if st.answered[node] == digest:
                return True
            raise Refused("ALREADY_EXISTS", "a different answer was already counted")
        if node in st.rejected:
            raise Refused("ALREADY_EXISTS", "this step's answer was already refused")
        try:
            cur.receiver(node, step, payload)
        except Refused as exc:
            st.rejected[node] = exc.reason
            await self._notify()
            raise
        st.answered[node] = digest
        log.info("node=%s round=%d: secagg step %d answer received", node, round_, step)
        await self._notify()
        return False

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


def _offer(st: _Step, node: str, step: int) -> Fetched:
    if node not in st.requests:
        return Fetched(FetchStatus.LEFT, reason=f"not asked at step {step} (dropped or excluded)")
    if not st.open:
        return Fetched(FetchStatus.LEFT, reason=f"step {step} closed before this node answered")
    return Fetched(FetchStatus.READY, st.requests[node])
