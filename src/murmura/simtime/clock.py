"""The simulated clock: now, and when a client that starts a fit finishes it or goes offline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from murmura.errors import ConfigError
from murmura.simtime.availability import INF, Availability, next_start
from murmura.simtime.profiles import Profile, fit_seconds
from murmura.types import FitRes

MAX_WAIT_STEPS = 100_000


class Straggler(Exception):  # noqa: N818 - the reason a round reports reads "client raised Straggler"
    """A client whose result came too late (deadline, over-selection) or never (offline)."""


@dataclass(slots=True)
class SimClock:
    """Simulated seconds since the run began, with every client's profile and availability."""

    profiles: dict[str, Profile]
    availability: Availability
    epochs: int
    size: int
    now: float = 0.0

    def available(self, nodes: Sequence[str]) -> list[str]:
        """The nodes reachable now, in order."""
        return [n for n in nodes if self.availability.window(n, self.now)[0] <= self.now]

    def wait_for(self, nodes: Sequence[str], count: int) -> list[str]:
        """Advance to the first time at least ``count`` of ``nodes`` are reachable."""
        for _ in range(MAX_WAIT_STEPS):
            if len(up := self.available(nodes)) >= count:
                return up
            t = next_start(self.availability, [n for n in nodes if n not in up], self.now)
            if t == INF:
                raise ConfigError(
                    f"clock: at {self.now:.1f} s fewer than {count} clients will ever be "
                    "available again (availability trace ended)"
                )
            self.now = t
        raise ConfigError(
            f"clock: {count} clients are never reachable at once (waited {MAX_WAIT_STEPS} "
            f"availability changes from {self.now:.1f} s); lower strategy.min_clients"
        )

    def finish(self, node: str, start: float, res: FitRes) -> tuple[float, float]:
        """When ``node``, starting at ``start``, delivers ``res``, and when it goes offline."""
        p = self.profiles[node]
        seconds = fit_seconds(p, res.num_examples, self.epochs, res.metrics, self.size)
        return start + seconds, self.availability.window(node, start)[1]
