"""Process entry point for the metrics test: a ``procs.py`` coordinator that serves ``/metrics``.

Workers are ``procs.py worker`` processes; only the coordinator differs, so ``procs.py`` keeps
one job.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from procs import LAYOUT, initial_weights, make_strategy

from murmura.transport import keys


def main() -> None:
    from murmura.node.coordinator import Coordinator, CoordinatorSettings
    from murmura.ops.metrics_http import MetricsEndpoint
    from murmura.transport.grpc_server import ServerOptions

    p = argparse.ArgumentParser()
    p.add_argument("--keys", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--metrics-port", type=int, required=True)
    p.add_argument("--state", required=True)
    p.add_argument("--names", required=True)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--grace", type=float, default=2.0, help="seconds served after the last round")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = a.names.split(",")
    f = keys.node_files(a.keys, "coordinator")
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=a.rounds,
        run_name="metrics-test",
        round_timeout_s=60,
        min_nodes=len(names),
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=2.0,
        shutdown_grace_s=a.grace,
        metrics=MetricsEndpoint(port=a.metrics_port),
    )
    server = ServerOptions(
        port=a.port,
        credentials=keys.Credentials.load(f.cert, f.key, f.ca),
        allowlist=frozenset(names),
    )
    strategy = make_strategy("fedavg", min_clients=len(names))
    asyncio.run(Coordinator(strategy, initial_weights(), LAYOUT, settings, server).run())


if __name__ == "__main__":
    main()
