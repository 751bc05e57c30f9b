"""When each client is reachable: always, a diurnal on/off pattern, or a CSV trace.

An ``Availability`` answers one question, ``window(node, t)``: the interval ``[start, end)``
of reachability that contains ``t`` or, if the node is off at ``t``, the next one
(``start = inf`` when there is none).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from murmura.errors import ConfigError

PHASE_STREAM = 0xD1A1
INF = math.inf


class Availability(Protocol):
    """When a node can be reached."""

    def window(self, node: str, t: float) -> tuple[float, float]:
        """The reachable interval containing ``t``, or the next one after it."""
        ...


class Always:
    """Every node is always reachable."""

    def window(self, node: str, t: float) -> tuple[float, float]:
        """From now on, forever."""
        return t, INF


class Diurnal:
    """On for ``on_fraction`` of every ``period`` seconds, from a seeded phase per node."""

    def __init__(self, nodes: Sequence[str], period: float, on_fraction: float, seed: int):
        rng = np.random.default_rng([seed, PHASE_STREAM])
        self.period, self.on = period, on_fraction * period
        self.phase = dict(zip(nodes, (rng.random(len(nodes)) * period).tolist(), strict=True))

    def window(self, node: str, t: float) -> tuple[float, float]:
        """The current on-interval, or the next."""
        if self.on >= self.period:
            return t, INF
        phase = self.phase[node]
        k = math.floor((t - phase) / self.period)
        start = phase + k * self.period
        if t < start + self.on:
            return t, start + self.on
        return start + self.period, start + self.period + self.on


class Trace:
    """Intervals read from a CSV with columns client, start, end (seconds)."""

    def __init__(self, intervals: dict[str, list[tuple[float, float]]]):
        self.intervals = {n: sorted(v) for n, v in intervals.items()}

    @classmethod
    def read(cls, path: str | Path, nodes: Sequence[str]) -> Trace:
        """Parse ``path``; an unknown client or a bad row is a ``ConfigError`` naming it."""
        known = set(nodes)
        out: dict[str, list[tuple[float, float]]] = {n: [] for n in nodes}
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as exc:
            raise ConfigError(f"clock.trace {path}: {exc.strerror}") from None
        for i, row in enumerate(rows, start=2):
            try:
                node, start, end = row["client"], float(row["start"]), float(row["end"])
            except (KeyError, TypeError, ValueError):
                raise ConfigError(
                    f"clock.trace {path} line {i}: needs columns client, start, end (numbers)"
                ) from None
            if node not in known:
                raise ConfigError(f"clock.trace {path} line {i}: unknown client {node!r}")
            if not start < end:
                raise ConfigError(f"clock.trace {path} line {i}: start {start} >= end {end}")
            out[node].append((start, end))
        return cls(out)

    def window(self, node: str, t: float) -> tuple[float, float]:
        """The interval holding ``t``, the next one, or ``(inf, inf)``."""
        for start, end in self.intervals[node]:
            if end > t:
                return max(start, t), end
        return INF, INF


def next_start(availability: Availability, nodes: Sequence[str], t: float) -> float:
    """The earliest time at or after ``t`` when one of ``nodes`` is reachable."""
    return min((availability.window(n, t)[0] for n in nodes), default=INF)
