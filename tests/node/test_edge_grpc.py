"""A 3-level tree over mTLS gRPC trains digits: root, 2 edge aggregators, 6 workers.

The root is ``murmura server`` with the two edges as its only nodes; each edge is
``murmura edge`` (a worker to the root, a coordinator to its 3 workers); the workers are
``murmura client``. Edges report their aggregate delta with their children's example total,
so the root's model after round 1 equals flat FedAvg over the 6 workers (the in-process
star simulation of the same config) to 1e-5. Edges hold edge certificates: each worker checks
that the node it dials is an edge, each edge that its parent is the coordinator, and the
root's audit ledger verifies against the CA with the edges as update authors. With a float16
downlink each edge sends its workers the float32 model in round 1, then float16 deltas
against the model each holds (the root's edges hold none: they get float32).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from murmura.cli import app
from murmura.compress import framed_size, make_codec
from murmura.transport import keys
from murmura.types import Layout

pytestmark = [pytest.mark.slow, pytest.mark.network]

ROUNDS, WORKERS = 3, 6
EDGES = {"edge-1": [0, 1, 2], "edge-2": [3, 4, 5]}

RUN = """
[run]
name = "tree-grpc"
seed = 0
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {workers}

[client]
epochs = 2
batch_size = 16
lr = 0.05

[strategy]
name = "fedavg"
fraction = 1.0
min_clients = 2

[evaluation]
every = 1

[compression]
downlink = "float16"
"""

ROOT = """
[server]
host = "127.0.0.1"
port = {port}
cert = "{keys}/coordinator.pem"
key = "{keys}/coordinator.key"
ca = "{keys}/ca.pem"
allowlist = ["edge-1", "edge-2"]
state_dir = "{state}"
min_nodes = 2
round_timeout = 90
join_timeout = 120
"""

EDGE = """
[edge]
name = "{name}"
parent = "127.0.0.1:{parent}"
port = {port}
key_dir = "{keys}"
allowlist = {children}
state_dir = "{state}"
min_nodes = 3
round_timeout = 60
join_timeout = 120
"""


class Tree:
    """Writes keys and configs, starts the nodes, and kills what is left at the end."""

    def __init__(self, tmp: Path, ports: Callable[[int], list[int]]) -> None:
        self.tmp, self.keys = tmp, tmp / "keys"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[BinaryIO] = []
        keys.init_ca(self.keys)
        keys.issue(self.keys, "coordinator", "coordinator")
        for name in EDGES:
            keys.issue(self.keys, name, "edge")
        for name in (f"worker-{i}" for i in range(WORKERS)):
            keys.issue(self.keys, name, "worker")
        self.root_port, *edge_ports = ports(1 + len(EDGES))
        self.edge_ports = dict(zip(EDGES, edge_ports, strict=True))
        run = RUN.format(rounds=ROUNDS, workers=WORKERS)
        self.root_cfg = tmp / "root.toml"
        self.root_cfg.write_text(
            run + ROOT.format(port=self.root_port, keys=self.keys, state=tmp / "root")
        )
        for name, children in EDGES.items():
            text = EDGE.format(
                name=name,
                parent=self.root_port,
                port=self.edge_ports[name],
                keys=self.keys,
                children=json.dumps([f"worker-{i}" for i in children]),
                state=tmp / "edges",
            )
            (tmp / f"{name}.toml").write_text(run + text)

    def start(self, label: str, module: str, *args: str) -> None:
        log = open(self.tmp / f"{label}.log", "wb")
        self.logs.append(log)
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT
        )

    def start_all(self) -> None:
        self.start("root", "murmura.node.cli", "server", str(self.root_cfg))
        for name, children in EDGES.items():
            self.start(name, "murmura.node.topology_cli", "edge", str(self.tmp / f"{name}.toml"))
            for i in children:
                w = f"worker-{i}"
                self.start(
                    w, "murmura.node.cli", "client",
                    "--server", f"127.0.0.1:{self.edge_ports[name]}",
                    "--partition", f"{i}/{WORKERS}", "--config", str(self.root_cfg),
                    "--cert", str(self.keys / f"{w}.pem"), "--key", str(self.keys / f"{w}.key"),
                    "--ca", str(self.keys / "ca.pem"),
                )  # fmt: skip

    def log(self, label: str) -> str:
        return (self.tmp / f"{label}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def tree(tmp_path: Path, ports: Callable[[int], list[int]]) -> Iterator[Tree]:
    t = Tree(tmp_path, ports)
    try:
        yield t
    finally:
        t.stop_all()


def _run_path(state: Path) -> Path:
    return state / "runs" / (state / "latest").read_text().strip()


def test_root_two_edges_six_workers_train_digits_like_flat_fedavg(tree: Tree) -> None:
    tree.start_all()
    flat_round_1, layout = _flat_fedavg_round_1(tree.root_cfg)  # while the nodes start up
    assert tree.procs["root"].wait(240) == 0, tree.log("root")
    for label, p in tree.procs.items():
        assert p.wait(30) == 0, tree.log(label)

    root_run = _run_path(tree.tmp / "root")
    lines = [json.loads(x) for x in (root_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == list(range(1, ROUNDS + 1))
    assert all(m["participants"] == len(EDGES) and not m["failures"] for m in lines)
    assert lines[-1]["test_accuracy"] > 0.8
    delta = framed_size(make_codec("float16"), layout.size)
    for name in EDGES:  # every edge aggregated all 3 of its workers in every round
        edge_lines = (_run_path(tree.tmp / "edges" / name) / "metrics.jsonl").read_text()
        edge_rounds = [json.loads(x) for x in edge_lines.splitlines()]
        assert [m["participants"] for m in edge_rounds] == [3] * ROUNDS
        down = [m["bytes_down_total"] for m in edge_rounds]
        assert down == [3 * 4 * layout.size] + [3 * delta] * (ROUNDS - 1)

    # each node checked whom it dialled: the workers their edge, the edges the root
    for name, children in EDGES.items():
        assert "is coordinator 'coordinator'" in tree.log(name)
        for i in children:
            assert f"127.0.0.1:{tree.edge_ports[name]} is edge {name!r}" in tree.log(f"worker-{i}")
    # the root's ledger holds the edges' signed updates, and their edge certificates vouch
    ca = str(tree.keys / "ca.pem")
    verified = CliRunner().invoke(app, ["audit", "verify", str(tree.tmp / "root"), "--ca", ca])
    assert verified.exit_code == 0, verified.output

    ckpt = load_file(str(root_run / "checkpoints" / "round-00001.safetensors"))
    deployed = layout.flatten(ckpt)
    np.testing.assert_allclose(deployed, flat_round_1, rtol=0, atol=1e-5)


def _flat_fedavg_round_1(cfg_path: Path) -> tuple[np.ndarray, Layout]:
    """Round 1 of the in-process star simulation over the same 6 clients."""
    import torch

    from murmura.node.deploy import split_config
    from murmura.sim.builder import build_experiment

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the node processes need the cores more
    try:
        cfg, _ = split_config(cfg_path)
        exp = build_experiment(cfg)
        weights = exp.simulation.run(1).weights
    finally:
        torch.set_num_threads(threads)
    return np.asarray(weights, dtype=np.float32), exp.model.layout
