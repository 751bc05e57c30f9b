"""A coordinator's Prometheus monitoring: its metrics, fed by the hub, served over HTTP.

The hub's events reach the metrics through the same callback as the audit ledger, so the
transport reports nothing twice and imports nothing of ``ops``. The connected-workers gauge is
refreshed on the event loop every heartbeat: the hub is not thread-safe, and the HTTP thread
only reads the registry, which is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping

from murmura.node import progress
from murmura.ops.metrics import CoordinatorMetrics
from murmura.ops.metrics_http import MetricsEndpoint, MetricsServer, serve_metrics
from murmura.transport.channel import Channel
from murmura.transport.hub import Events
from murmura.types import Scalar


class Monitor:
    """Owns a coordinator's ``CoordinatorMetrics`` and, with an endpoint, serves them."""

    def __init__(self, endpoint: MetricsEndpoint | None = None) -> None:
        self.metrics = CoordinatorMetrics()
        self.endpoint = endpoint
        self.server: MetricsServer | None = None
        self._watcher: asyncio.Task[None] | None = None

    def events(self, first: Events) -> Events:
        """A hub ``Events`` callback: ``first`` (the audit ledger), then the metrics."""

        def record(event: str, node: str, round_: int, details: Mapping[str, Scalar]) -> None:
            first(event, node, round_, details)
            self.metrics.observe(event, node, round_, details)

        return record

    async def start(self, hub: Channel, period_s: float) -> None:
        """Serve ``/metrics`` (if an endpoint is set) and track ``hub``'s live workers."""
        if self.endpoint is None:
            return
        self.server = serve_metrics(self.metrics.exposition, self.endpoint)
        progress.metrics_at("coordinator", self.server.url)
        self._watcher = asyncio.create_task(self._watch(hub, period_s))

    async def stop(self) -> None:
        """Stop tracking and serving; the registry stays readable in-process."""
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self.server is not None:
            await asyncio.to_thread(self.server.close)
            self.server = None

    async def _watch(self, hub: Channel, period_s: float) -> None:
        while True:
            self.metrics.set_connected(len(hub.alive()))
            await asyncio.sleep(period_s)
