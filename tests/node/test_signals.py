"""Ctrl-C (SIGINT) and SIGTERM stop every deployed role cleanly, and the same command resumes.

Real processes over mTLS on digits: ``murmura server`` with one ``murmura edge`` under it and
one ``murmura client`` under the edge; then two ``murmura peer`` processes (a complete graph).
Each is interrupted mid-run: it must exit 0 within a few seconds with one "interrupted at round
N; run the same command to resume" line and no traceback. Started again, the coordinator says
"resumed run X at round N" with the same N; a peer's N is its checkpoint's round, where a
restarted peer resumes (``test_peer_grpc``). Some nodes print ``--log-format json``: every
line of theirs is one JSON object.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

RUN = """
[run]
name = "signals"
seed = 0
rounds = 100000

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = 1

[client]
epochs = 1
batch_size = 32
lr = 0.05

[strategy]
name = "fedavg"
min_clients = 1

[evaluation]
every = 0
"""

SERVER = """
[server]
port = {port}
cert = "{keys}/coordinator.pem"
key = "{keys}/coordinator.key"
ca = "{keys}/ca.pem"
allowlist = ["edge-1"]
state_dir = "{tmp}/root"
"""

EDGE = """
[edge]
name = "edge-1"
parent = "127.0.0.1:{port}"
port = {edge_port}
key_dir = "{keys}"
allowlist = ["worker-0"]
state_dir = "{tmp}/edges"
"""

PEERS = """
[run]
name = "signals-ring"
seed = 0
rounds = 100000

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {peers}

[client]
epochs = 1
batch_size = 32
lr = 0.05

[evaluation]
every = 0

[topology]
kind = "complete"
algorithm = "gossip"

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = 5.0
round_period = 0.2
join_timeout = 60.0
"""

EXIT_S = 15.0
"""Loose bound for a loaded CI machine; the figures measured are in the closing note."""


class Nodes:
    """Node processes by label, each logging to ``<label>.log``; kills what is left."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.files: list[BinaryIO] = []

    def start(self, label: str, module: str, *args: str) -> None:
        log = open(self.tmp / f"{label}.log", "wb")
        self.files.append(log)
        self.procs[label] = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=log, stderr=subprocess.STDOUT
        )

    def log(self, label: str) -> str:
        return (self.tmp / f"{label}.log").read_text(errors="replace")

    def stop(self, label: str, sig: signal.Signals = signal.SIGINT) -> float:
        """Send ``sig``; return the seconds until the process exited 0."""
        p = self.procs[label]
        t0 = time.monotonic()
        p.send_signal(sig)
        rc = p.wait(EXIT_S)
        took = time.monotonic() - t0
        assert rc == 0, self.log(label)
        return took

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for f in self.files:
            f.close()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a ``--log-format json`` log, parsed (a line that is not JSON fails)."""
    out = [json.loads(line) for line in text.splitlines() if line.strip()]
    for row in out:
        assert {"time", "level", "node", "run", "round", "event", "message"} <= row.keys(), row
    return out


def clean_stop(text: str, round_: int | None = None) -> int:
    """Assert one interrupted line and no traceback; return its round."""
    for bad in ("Traceback", "Lock is not acquired", "Task was destroyed", "terminate called"):
        assert bad not in text, text
    lines = [x for x in text.splitlines() if "interrupted at round" in x]
    assert len(lines) == 1 and "run the same command to resume" in lines[0], text
    got = int(lines[0].split("interrupted at round ")[1].split(";")[0])
    assert round_ is None or got == round_, (got, round_)
    return got


def completed(state: Path) -> int:
    """Rounds in the coordinator's metrics.jsonl (0 before the first)."""
    latest = state / "latest"
    if not latest.exists():
        return 0
    path = state / "runs" / latest.read_text().strip() / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture
def nodes(tmp_path: Path) -> Any:
    n = Nodes(tmp_path)
    try:
        yield n
    finally:
        n.close()


def _tree(tmp: Path, ports: Callable[[int], list[int]]) -> tuple[Path, Path, list[str]]:
    key_dir = tmp / "keys"
    keys.init_ca(key_dir)
    keys.issue(key_dir, "coordinator", "coordinator")
    keys.issue(key_dir, "edge-1", "edge")
    keys.issue(key_dir, "worker-0", "worker")
    port, edge_port = ports(2)
    root, edge = tmp / "root.toml", tmp / "edge.toml"
    root.write_text(RUN + SERVER.format(port=port, keys=key_dir, tmp=tmp))
    edge.write_text(RUN + EDGE.format(port=port, edge_port=edge_port, keys=key_dir, tmp=tmp))
    w = key_dir / "worker-0"
    client = [
        "client", "--server", f"127.0.0.1:{edge_port}", "--partition", "0/1",
        "--config", str(root), "--cert", f"{w}.pem", "--key", f"{w}.key",
        "--ca", str(key_dir / "ca.pem"), "--log-format", "json",
    ]  # fmt: skip
    return root, edge, client


def test_server_edge_and_client_stop_on_a_signal_and_resume(
    nodes: Nodes, tmp_path: Path, ports: Callable[[int], list[int]]
) -> None:
    root, edge, client = _tree(tmp_path, ports)
    state = tmp_path / "root"
    nodes.start("server-1", "murmura.node.cli", "server", str(root))
    nodes.start("edge-1", "murmura.node.topology_cli", "edge", str(edge))
    nodes.start("client-1", "murmura.node.cli", *client)
    wait_for(lambda: completed(state) >= 2, 120, "two rounds")
    took = {"client": nodes.stop("client-1")}  # its round is lost; the edge's fails it
    took["edge"] = nodes.stop("edge-1")
    took["server"] = nodes.stop("server-1")
    print(f"seconds to exit on SIGINT: {took}")
    stopped_at = clean_stop(nodes.log("server-1"))
    assert stopped_at == completed(state) >= 2  # the round in progress was abandoned
    clean_stop(nodes.log("edge-1"))
    said = json_lines(nodes.log("client-1"))
    assert said[-1]["event"] == "interrupted" and said[-1]["signal"] == "SIGINT"
    assert said[-1]["node"] == "worker-0" and said[-1]["run"].startswith("signals-edge-1")
    assert any(x["event"] == "joined" for x in said)
    server_text = nodes.log("server-1")
    assert "listening on 127.0.0.1:" in server_text and "(mutual TLS)" in server_text
    assert "round 2/100000: participants 1 train loss " in server_text

    # The same command again: the coordinator resumes where it stopped (and waits for its
    # edge, so SIGTERM finds it in that wait).
    nodes.start("server-2", "murmura.node.cli", "server", str(root), "--log-format", "json")
    wait_for(lambda: '"event": "waiting"' in nodes.log("server-2"), 120, "the resumed server")
    nodes.stop("server-2", signal.SIGTERM)
    said = json_lines(nodes.log("server-2"))
    resumed = [x for x in said if x["event"] == "resumed"]
    assert len(resumed) == 1 and resumed[0]["round"] == stopped_at
    assert resumed[0]["run"] == said[-1]["run"] and resumed[0]["rounds"] == 100000
    assert said[-1]["event"] == "interrupted" and said[-1]["signal"] == "SIGTERM"
    assert said[-1]["round"] == stopped_at == completed(state)


def test_peers_stop_on_a_signal_at_their_checkpoint_round(
    peer_procs: Callable[..., Any],
) -> None:
    ring = peer_procs(2, PEERS)
    ring.start(0)
    ring.start(1, "--log-format", "json")
    ring.wait_for(lambda: ring.last_round(0) >= 2, 120, "peer 0's second round")
    t0 = time.monotonic()
    ring.procs[0].send_signal(signal.SIGINT)
    assert ring.procs[0].wait(EXIT_S) == 0, ring.log(0)
    print(f"seconds to exit on SIGINT: peer {time.monotonic() - t0:.2f}")
    held = ring.model(0)
    assert held is not None
    clean_stop(ring.log(0), held[0])  # the round its restart resumes from (test_peer_grpc)
    assert "local consensus distance" in ring.log(0)  # it mixed with its neighbour
    ring.procs[1].send_signal(signal.SIGTERM)
    assert ring.procs[1].wait(EXIT_S) == 0, ring.log(1)
    said = json_lines(ring.log(1))
    events = [x["event"] for x in said]
    assert {"listening", "started"} <= set(events) and events[-1] == "interrupted"
    mixed = [x for x in said if x["event"] == "round" and x["neighbours"] == 1]
    assert mixed and all(x["local_consensus_distance"] >= 0 for x in mixed)
    assert said[-1]["round"] == ring.model(1)[0]  # type: ignore[index]
