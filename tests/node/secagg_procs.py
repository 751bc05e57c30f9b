"""Process entry points for the secure aggregation deployment test (see ``procs.py``).

``coordinator`` runs FedAvg under SecAgg+ (``SecureAggregation``) on ``procs.LAYOUT``, or with
``--big`` on ``BIG_LAYOUT`` (1.5 million parameters: a 6 MB masked input, over the 4 MiB gRPC
message limit); ``worker`` is a ``procs.FakeClient`` worker that, with
``--die-after-masked-input``, SIGKILLs itself as soon as the coordinator has accepted its
masked input: it never unmasks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import numpy as np
from procs import LAYOUT, FakeClient, initial_weights

from murmura.node.worker import Worker
from murmura.transport import keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.proto import secagg_pb2 as spb
from murmura.types import Layout

MAX_WEIGHT = 16.0  # FakeClient weights are 10..16 examples
BIG_LAYOUT = Layout(("a", "b"), ((1_000_000,), (1000, 500)))


def big_weights() -> np.ndarray:
    return np.random.default_rng(0).standard_normal(BIG_LAYOUT.size).astype(np.float32)


def coordinator(a: argparse.Namespace) -> None:
    from murmura.node.coordinator import Coordinator, CoordinatorSettings
    from murmura.strategy import FedAvg
    from murmura.strategy.secure import SecAggParams, SecureAggregation
    from murmura.transport.grpc_server import ServerOptions

    f = keys.node_files(a.keys, "coordinator")
    settings = CoordinatorSettings(
        state_dir=Path(a.state),
        rounds=1,
        run_name="secagg-test",
        round_timeout_s=60,
        min_nodes=a.min_nodes,
        join_timeout_s=60,
        heartbeat_s=0.3,
        lost_after_s=2.0,
        shutdown_grace_s=1.0,
        secagg_stage_timeout_s=30,
    )
    server = ServerOptions(
        port=a.port,
        credentials=keys.Credentials.load(f.cert, f.key, f.ca),
        allowlist=frozenset(a.names.split(",")),
    )
    params = SecAggParams(clip=1.0, max_weight=MAX_WEIGHT, seed=0, level_bits=a.levels or None)
    strategy = SecureAggregation(FedAvg(min_clients=2, seed=0), params)
    weights, layout = (big_weights(), BIG_LAYOUT) if a.big else (initial_weights(), LAYOUT)
    asyncio.run(Coordinator(strategy, weights, layout, settings, server).run())


def die_after_masked_input(round_: int, step: int) -> None:
    if step == spb.SECAGG_MASKED_INPUT:
        logging.getLogger("secagg_procs").warning("masked input sent in round %d; dying", round_)
        os.kill(os.getpid(), signal.SIGKILL)


def worker(a: argparse.Namespace) -> None:
    f = keys.node_files(a.keys, a.name)
    opts = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.1, backoff_max_s=0.5, max_retry_s=60)
    link = CoordinatorLink(
        f"127.0.0.1:{a.port}", a.name, keys.Credentials.load(f.cert, f.key, f.ca), opts
    )
    client = FakeClient(a.name, Path(a.out), -1)
    hook = die_after_masked_input if a.die_after_masked_input else None
    Worker(link, client, rejoin_max_s=60, on_secagg_step=hook).run()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("role", choices=["coordinator", "worker"])
    p.add_argument("--keys", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", default="")
    p.add_argument("--min-nodes", type=int, default=1)
    p.add_argument("--names", default="")
    p.add_argument("--name", default="")
    p.add_argument("--out", default="")
    p.add_argument("--die-after-masked-input", action="store_true")
    p.add_argument("--big", action="store_true")
    p.add_argument("--levels", type=int, default=0)  # 8: quantised SecAgg, mod 2^16
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    coordinator(a) if a.role == "coordinator" else worker(a)


if __name__ == "__main__":
    main()
