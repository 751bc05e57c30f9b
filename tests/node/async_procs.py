"""Process entry points for the asynchronous (FedBuff over gRPC) deployment test.

``coordinator`` runs an ``AsyncCoordinator`` with FedAvg on ``procs.LAYOUT`` and the rule
that ``[clock] mode = 'async'`` with ``buffer_size`` and ``max_staleness`` describes.
``worker`` is a ``procs.FakeClient`` worker paced by ``PacedClient``: a fixed delay per fit,
optionally a first fit that waits for the test's ``release-NAME`` file (a straggler), and a
fit past ``--max-fits`` that hangs (the test then knows every earlier update was delivered).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from pathlib import Path

from procs import LAYOUT, FakeClient, initial_weights

from murmura.node.worker import Worker
from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.types import FitIns, FitRes


class PacedClient:
    """A ``FakeClient`` that takes ``delay`` s per fit, may wait once, and hangs at the end."""

    def __init__(self, inner: FakeClient, delay: float, pause_first: bool, max_fits: int) -> None:
        self.inner, self.delay, self.pause_first, self.max_fits = (
            inner,
            delay,
            pause_first,
            max_fits,
        )
        self.fits = 0

    def fit(self, ins: FitIns) -> FitRes:
        self.fits += 1
        out, name = self.inner.out, self.inner.name
        if 0 < self.max_fits < self.fits:  # every earlier update has been delivered
            (out / f"{name}-hung").touch()
            time.sleep(3600)
        if self.fits == 1 and self.pause_first:
            (out / f"{name}-paused").touch()
            while not (out / f"release-{name}").exists():
                time.sleep(0.05)
        time.sleep(self.delay)
        return self.inner.fit(ins)


def coordinator(a: argparse.Namespace) -> None:
    from murmura.config.clock import ClockSection
    from murmura.node.async_coordinator import AsyncCoordinator
    from murmura.node.coordinator import CoordinatorSettings
    from murmura.simtime.arrival import async_rule
    from murmura.strategy import FedAvg
    from murmura.transport.grpc_server import ServerOptions

    f = keys.node_files(a.keys, "coordinator")
    names = a.names.split(",")
    clock = ClockSection(
        enabled=True, mode="async", buffer_size=a.buffer_size, max_staleness=a.max_staleness
    )
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=a.rounds,
        run_name="test",
        round_timeout_s=60,
        min_nodes=len(names),
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=5.0,
        shutdown_grace_s=1.0,
    )
    server = ServerOptions(
        port=a.port,
        credentials=keys.Credentials.load(f.cert, f.key, f.ca),
        allowlist=frozenset(names),
    )
    strategy = FedAvg(min_clients=1, seed=0)
    rule = async_rule(clock, len(names))
    coord = AsyncCoordinator(strategy, initial_weights(), LAYOUT, settings, server, rule)
    asyncio.run(coord.run())


def worker(a: argparse.Namespace) -> None:
    f = keys.node_files(a.keys, a.name)
    opts = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5, max_retry_s=120)
    link = CoordinatorLink(
        f"127.0.0.1:{a.port}", a.name, keys.Credentials.load(f.cert, f.key, f.ca), opts
    )
    inner = FakeClient(a.name, Path(a.out), -1)
    client = PacedClient(inner, a.delay, a.pause_first, a.max_fits)
    Worker(link, client, rejoin_max_s=120).run()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["coordinator", "worker"])
    p.add_argument("--keys", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", default="")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--buffer-size", type=int, default=2)
    p.add_argument("--max-staleness", type=int, default=None)
    p.add_argument("--names", default="")
    p.add_argument("--name", default="")
    p.add_argument("--out", default="")
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--pause-first", action="store_true")
    p.add_argument("--max-fits", type=int, default=0, help="0: no limit")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    {"coordinator": coordinator, "worker": worker}[a.role](a)


if __name__ == "__main__":
    main()
