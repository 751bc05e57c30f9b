"""A request rate per identity for the job API's write calls (Submit, Abort, Download).

Each of these is a signed ledger record (and a submit a job row), so an admin's certificate
calling them in a loop could grow the ledger without bound. A token bucket (Turner, "New
directions in communications", IEEE Communications Magazine 24(10), 1986) per certificate
name admits at most ``burst + rate * t`` calls in any span of ``t`` seconds; the others are
refused before anything is written. The number of buckets is bounded like
``transport.repeats``' windows: the one idle longest is dropped to make room.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

DEFAULT_MAX_BUCKETS = 4096


@dataclass(slots=True)
class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each admitted call takes one."""

    rate: float
    burst: float
    tokens: float
    stamp: float
    """When ``tokens`` was last brought up to date (clock seconds)."""

    def take(self, now: float) -> float:
        """Take a token at ``now``: 0.0 if admitted, else the seconds until one is there."""
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(slots=True)
class RequestLimiter:
    """A full ``TokenBucket`` per identity at its first call; ``admit`` takes from it."""

    per_minute: float
    burst: int
    max_buckets: int = DEFAULT_MAX_BUCKETS
    clock: Callable[[], float] = time.monotonic
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if not self.per_minute > 0:
            raise ValueError(f"per_minute must be > 0, got {self.per_minute}")
        if self.burst < 1 or self.max_buckets < 1:
            raise ValueError(f"burst and max_buckets must be >= 1, got {self.burst}, "
                             f"{self.max_buckets}")  # fmt: skip

    def admit(self, identity: str) -> float:
        """0.0 if ``identity`` may make a call now, else the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(identity)
        if bucket is None:
            while len(self._buckets) >= self.max_buckets:
                self._buckets.popitem(last=False)
            bucket = TokenBucket(self.per_minute / 60.0, self.burst, self.burst, now)
            self._buckets[identity] = bucket
        self._buckets.move_to_end(identity)
        return bucket.take(now)

    def __len__(self) -> int:
        """Number of identities with a bucket."""
        return len(self._buckets)
