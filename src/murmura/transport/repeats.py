"""Counting repeated events, so that a flood of calls cannot flood the log or the audit ledger.

A caller with a valid certificate can repeat a refused call (or any call that is recorded) as
fast as the link carries it; logging and signing a ledger row for each would let it fill the
disk and bury the rest of the record. A ``RepeatLimiter`` keeps one window per (identity,
kind): the first event of a window is logged and recorded as before, the repeats within it are
only counted, and once the window closes one summary (``Repeat``) carries their number. The
number of open windows is bounded, so a caller cannot exhaust memory with new keys either: the
oldest window is closed early to make room.

``PullSlots`` bounds the other amplifier, the model itself: one Pull at a time per node, a
few copies of a round's model per node, and one ``model_sent`` record per node per round and
phase.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from murmura.types import Scalar

DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_WINDOWS = 4096
DEFAULT_MAX_SENDS = 3
"""Copies of one round's model a node may fetch: the first, and two after a lost one."""
_NOT_REPEATED = frozenset({"certificate"})
"""Details not copied into a summary (a join's PEM is in the first record already)."""


@dataclass(frozen=True, slots=True)
class Repeat:
    """The repeats of one closed window: who, what, how many, over how long."""

    identity: str
    kind: str
    count: int
    seconds: float
    """From the window's first event to its last repeat."""
    details: Mapping[str, Scalar]
    """The details of the window's first event (what was repeated)."""

    def summary(self, window_s: float) -> dict[str, Scalar]:
        """Details of the ``repeated`` ledger record: the first event's, the count, the span."""
        first = {k: v for k, v in self.details.items() if k not in _NOT_REPEATED}
        return {**first, "count": self.count, "seconds": round(self.seconds, 3),
                "window_s": window_s}  # fmt: skip

    def __str__(self) -> str:
        what = self.details.get("reason", self.details.get("code", self.kind))
        return (
            f"{self.details.get('repeat_of', self.kind)} repeated {self.count} more times "
            f"in {self.seconds:.1f} s ({what})"
        )


@dataclass(slots=True)
class _Window:
    opened: float
    last: float
    details: Mapping[str, Scalar]
    count: int = 0


@dataclass(slots=True)
class RepeatLimiter:
    """Per (identity, kind) windows of ``window_s``: first events pass, repeats are counted."""

    window_s: float = DEFAULT_WINDOW_S
    max_windows: int = DEFAULT_MAX_WINDOWS
    clock: Callable[[], float] = time.monotonic
    _open: OrderedDict[tuple[str, str], _Window] = field(default_factory=OrderedDict)
    _closed: list[Repeat] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if self.max_windows < 1:
            raise ValueError(f"max_windows must be >= 1, got {self.max_windows}")

    def first(self, identity: str, kind: str, details: Mapping[str, Scalar] | None = None) -> bool:
        """True for the first event of its window (log and record it); else count a repeat."""
        now = self.clock()
        self._expire(now)
        window = self._open.get((identity, kind))
        if window is not None:
            window.count += 1
            window.last = now
            return False
        self._make_room()
        self._open[(identity, kind)] = _Window(now, now, dict(details or {}))
        return True

    def repeat(self, identity: str, kind: str, details: Mapping[str, Scalar] | None = None) -> None:
        """Count a repeat of an event recorded elsewhere (opening a window if none is open)."""
        if self.first(identity, kind, details):
            self._open[(identity, kind)].count = 1

    def closed(self) -> list[Repeat]:
        """Take the summaries of the windows that closed with repeats (empty ones are dropped)."""
        self._expire(self.clock())
        out, self._closed = self._closed, []
        return out

    def drain(self) -> list[Repeat]:
        """Close every window now (at shutdown) and take the summaries that have repeats."""
        while self._open:
            self._close_oldest()
        out, self._closed = self._closed, []
        return out

    def __len__(self) -> int:
        """Number of open windows."""
        return len(self._open)

    def _expire(self, now: float) -> None:
        # Every window is as long, so the oldest opened is the first to close.
        while self._open:
            oldest = next(iter(self._open.values()))
            if now - oldest.opened < self.window_s:
                return
            self._close_oldest()

    def _make_room(self) -> None:
        while len(self._open) >= self.max_windows:
            self._close_oldest()

    def _close_oldest(self) -> None:
        (identity, kind), w = self._open.popitem(last=False)
        if w.count:
            self._closed.append(Repeat(identity, kind, w.count, w.last - w.opened, w.details))


@dataclass(slots=True)
class PullSlots:
    """One Pull in progress per node, and at most ``max_sends`` copies of a round's model.

    A copy lost on the way (the link broke after the last frame left) can be fetched again,
    but only ``max_sends - 1`` times: after that the node's Pulls wait for the next round, as
    if it had answered, so one identity cannot turn Pulls into a stream of models.
    """

    max_sends: int = DEFAULT_MAX_SENDS
    rounds_kept: int = 4
    """Rounds whose counts are kept: a round's FIT and EVALUATE phases, and the last's.

    The async hub raises it to its open dispatches (each one a round of its own)."""
    active: set[str] = field(default_factory=set)
    _served: dict[tuple[int, int], Counter[str]] = field(default_factory=dict)

    def start(self, node: str) -> bool:
        """Claim ``node``'s Pull slot; False if another Pull of it is in progress."""
        if node in self.active:
            return False
        self.active.add(node)
        return True

    def end(self, node: str) -> None:
        """Free ``node``'s Pull slot."""
        self.active.discard(node)

    def may_send(self, node: str, round_: int, kind: int) -> bool:
        """Whether ``node`` may be sent this (round, kind)'s model (again)."""
        return self._counts(round_, kind)[node] < self.max_sends

    def sent(self, node: str, round_: int, kind: int) -> bool:
        """Count a copy sent to ``node``; True for the first (the one the ledger records)."""
        counts = self._counts(round_, kind)
        counts[node] += 1
        return counts[node] == 1

    def _counts(self, round_: int, kind: int) -> Counter[str]:
        key = (round_, kind)
        if key not in self._served:
            self._served[key] = Counter()
            while len(self._served) > self.rounds_kept:
                del self._served[next(iter(self._served))]
        return self._served[key]
