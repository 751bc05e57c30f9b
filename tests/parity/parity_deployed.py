"""The deployed half of the parity matrix: every cell in this one process.

``python tests/parity/parity_deployed.py CELLS.json OUT`` (topology -> cell -> run config):
each cell's roles are built as ``murmura server``, ``client``, ``edge`` and ``peer`` build
them (``build_coordinator``, ``client_from_config``, ``build_edge``, ``build_peer``) and run
over loopback gRPC (insecure: certificates are not what is compared) in one event loop,
workers in threads. A builder that refuses the config records its one-line error. Writes
``OUT/<topology>/<cell>.json`` (the refusal, or each round's epsilon and the failures) and
``<cell>.npy`` (the final model; one row per peer for a ring). One launch for the whole
matrix: torch and the task load once, and the cells run side by side.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
from portpool import free_ports  # tests/ is on PYTHONPATH (test_parity_matrix)

from murmura.errors import ConfigError
from murmura.types import RoundMetrics

EDGES = {"edge-1": [0, 1], "edge-2": [2, 3]}  # the simulated tree's contiguous blocks


def _compared(key: str) -> bool:
    """The round figures both halves must agree on: privacy spent and nodes flagged."""
    return "epsilon" in key or key == "flagged"


def _summary(rounds: list[RoundMetrics]) -> dict[str, Any]:
    return {
        "rounds": [m.round for m in rounds],
        "extra": [{k: v for k, v in m.extra.items() if _compared(k)} for m in rounds],
        "failures": [[m.round, f.node, f.reason] for m in rounds for f in m.failures],
    }


def _link(port: int, name: str) -> Any:
    from murmura.transport.grpc_client import CoordinatorLink, LinkOptions

    opts = LinkOptions(pull_wait_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.3)
    return CoordinatorLink(f"127.0.0.1:{port}", name, None, opts)


async def _workers(cfg: Any, parents: dict[int, int]) -> list[Any]:
    """Worker ``i`` (partition i/n, node id of simulated client i) dials ``parents[i]``."""
    from murmura.node.deploy import client_from_config
    from murmura.node.worker import Worker

    n = cfg.partition.num_clients
    clients = [client_from_config(cfg, f"{i}/{n}") for i in range(n)]
    # a worker that misses SHUTDOWN under load gives up after 5 s, not the default 10 min
    workers = [
        Worker(_link(parents[i], f"client-{i}"), c, rejoin_max_s=5.0)
        for i, c in enumerate(clients)
    ]
    return [asyncio.to_thread(w.run) for w in workers]


def _patient(coordinator: Any) -> Any:
    """``coordinator`` holding its SHUTDOWN 5 s (not 2): 30 cells share two cores here."""
    coordinator.settings = dataclasses.replace(coordinator.settings, shutdown_grace_s=5.0)
    return coordinator


def _server_table(tmp: Path, port: int, nodes: list[str]) -> dict[str, Any]:
    return {
        "port": port,
        "state_dir": str(tmp / "root"),
        "min_nodes": len(nodes),
        "allowlist": nodes,
        "round_timeout": 30.0,
        "join_timeout": 30.0,
        "heartbeat": 0.3,
        "lost_after": 30.0,  # as the round timeout: a worker starved of CPU is slow, not lost
    }


async def star(run: dict[str, Any], tmp: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from murmura.node.deploy import build_coordinator, split_config

    (port,) = free_ports(1)
    n = run["partition"]["num_clients"]
    path = tmp / "deploy.toml"
    nodes = [f"client-{i}" for i in range(n)]
    path.write_text(tomli_w.dumps({**run, "server": _server_table(tmp, port, nodes)}))
    cfg, server = split_config(path)
    coordinator = _patient(build_coordinator(cfg, server, insecure=True))
    workers = await _workers(cfg, dict.fromkeys(range(n), port))
    result, *_ = await asyncio.gather(coordinator.run(), *workers)
    return np.asarray(result.weights), _summary(result.rounds)


async def tree(run: dict[str, Any], tmp: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from murmura.node.deploy import build_coordinator, split_config
    from murmura.node.topology_deploy import build_edge

    root_port, *edge_ports = free_ports(1 + len(EDGES))
    path = tmp / "root.toml"
    path.write_text(tomli_w.dumps({**run, "server": _server_table(tmp, root_port, list(EDGES))}))
    cfg, server = split_config(path)
    root = _patient(build_coordinator(cfg, server, insecure=True))
    edges, parents = [], {}
    for (name, children), port in zip(EDGES.items(), edge_ports, strict=True):
        table = {
            "name": name,
            "parent": f"127.0.0.1:{root_port}",
            "port": port,
            "allowlist": [f"client-{i}" for i in children],
            "min_nodes": len(children),
            "state_dir": str(tmp / "edges"),
            "round_timeout": 30.0,
            "join_timeout": 30.0,
            "heartbeat": 0.3,
            "lost_after": 30.0,
        }
        edge_path = tmp / f"{name}.toml"
        edge_path.write_text(tomli_w.dumps({**run, "edge": table}))
        edges.append(build_edge(edge_path, insecure=True))
        parents.update(dict.fromkeys(children, port))
    workers = await _workers(cfg, parents)
    result, *_ = await asyncio.gather(root.run(), *(e.run() for e in edges), *workers)
    return np.asarray(result.weights), _summary(result.rounds)


async def ring(run: dict[str, Any], tmp: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from murmura.node.topology_deploy import build_peer

    n = run["topology"]["args"]["n"]
    peers = {
        "addresses": [f"127.0.0.1:{p}" for p in free_ports(n)],
        "state_dir": str(tmp / "peers"),
        "round_timeout": 30.0,
        "join_timeout": 30.0,
    }
    path = tmp / "ring.toml"
    path.write_text(tomli_w.dumps({**run, "peers": peers}))
    nodes = [build_peer(path, i, insecure=True) for i in range(n)]
    results = await asyncio.gather(*(p.run() for p in nodes))
    text = (tmp / "peers" / "peer-0" / "metrics.jsonl").read_text()  # every peer spends alike
    lines = [json.loads(x) for x in text.splitlines()]
    extra = [{k: v for k, v in m.items() if _compared(k)} for m in lines]
    missing = [
        [r, f"peer-{i}", str(m)] for i, p in enumerate(results) for r, m in p.missing.items()
    ]
    summary = {"rounds": [m["round"] for m in lines], "extra": extra, "failures": missing}
    return np.stack([np.asarray(p.weights) for p in results]), summary


RUNNERS = {"star": star, "tree": tree, "ring": ring}


async def _cell(topology: str, cell: str, run: dict[str, Any], out: Path) -> None:
    """Run one cell; write its model and summary, or the builder's refusal."""
    out = out / topology
    tmp = out / f"{cell}-work"
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        weights, summary = await RUNNERS[topology](run, tmp)
    except ConfigError as exc:
        summary = {"refused": str(exc)}
    else:
        np.save(out / f"{cell}.npy", weights, allow_pickle=False)
    summary["seconds"] = time.perf_counter() - t0
    (out / f"{cell}.json").write_text(json.dumps(summary))


async def _all(matrix: dict[str, dict[str, dict[str, Any]]], out: Path) -> None:
    """Every cell at once: each has its own ports and state, and mostly waits on the network."""
    # every worker and edge link blocks a thread: more than asyncio's default pool holds
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(128))
    gate = asyncio.Semaphore(10)  # ten clusters at a time: all 30 at once starve two cores

    async def gated(t: str, c: str, run: dict[str, Any]) -> None:
        async with gate:
            await _cell(t, c, run, out)

    await asyncio.gather(
        *(gated(t, c, run) for t, cells in matrix.items() for c, run in cells.items())
    )


def main() -> None:
    cells_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(_all(json.loads(cells_path.read_text()), out))


if __name__ == "__main__":
    main()
