from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
from portpool import free_port, free_ports
from safetensors import safe_open
from safetensors.numpy import load_file

from murmura.transport import keys

PROCS = Path(__file__).with_name("procs.py")


@pytest.fixture
def ports() -> Callable[[int], list[int]]:
    """``free_ports`` for tests that lay out several listeners before starting them."""
    return free_ports


def make_keys(root: Path, names: list[str], edges: tuple[str, ...] = ()) -> Path:
    """A CA, the coordinator's certificate, and an edge (in ``edges``) or worker one per name."""
    keys.init_ca(root)
    keys.issue(root, "coordinator", "coordinator")
    for name in names:
        keys.issue(root, name, "edge" if name in edges else "worker")
    return root


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def run_path(state: Path) -> Path:
    return state / "runs" / (state / "latest").read_text().strip()


def checkpoint(state: Path, round_: int) -> np.ndarray:
    t = load_file(str(run_path(state) / "checkpoints" / f"round-{round_:05d}.safetensors"))
    return np.concatenate([t["a"].reshape(-1), t["b"].reshape(-1)])


class Procs:
    """Starts node processes, logs each to a file, and kills whatever is left at the end."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[BinaryIO] = []

    def start(self, label: str, *args: str, script: Path = PROCS) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{label}.log", "ab")
        self.logs.append(log)
        p = subprocess.Popen(
            [sys.executable, str(script), *args], stdout=log, stderr=subprocess.STDOUT
        )
        self.procs[label] = p
        return p

    def log(self, label: str) -> str:
        return (self.tmp / f"{label}.log").read_text(errors="replace")

    free_port = staticmethod(free_port)
    make_keys = staticmethod(make_keys)
    wait_for = staticmethod(wait_for)
    checkpoint = staticmethod(checkpoint)
    run_path = staticmethod(run_path)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


class PeerProcs:
    """A P2P run of ``n`` peer processes (``murmura peer CONFIG --id K``), each with its own
    certificate and log; ``template`` is formatted with ``peers``, ``addresses``, ``keys``,
    ``state`` and ``fields``. Kills what is left at the end."""

    def __init__(
        self, tmp: Path, n: int, template: str, ports: Callable[[int], list[int]], **fields: Any
    ) -> None:
        self.tmp, self.n, self.state = tmp, n, tmp / "state"
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.logs: list[BinaryIO] = []
        key_dir = tmp / "keys"
        keys.init_ca(key_dir)
        for i in range(n):
            keys.issue(key_dir, f"peer-{i}", "worker")
        addresses = [f"127.0.0.1:{p}" for p in ports(n)]
        self.config = tmp / "ring.toml"
        self.config.write_text(
            template.format(
                peers=n, addresses=json.dumps(addresses), keys=key_dir, state=self.state, **fields
            )
        )

    def start(self, i: int, *args: str) -> None:
        log = open(self.tmp / f"peer-{i}.log", "ab")
        self.logs.append(log)
        cmd = [sys.executable, "-m", "murmura.node.topology_cli", "peer", str(self.config)]
        self.procs[i] = subprocess.Popen(
            [*cmd, "--id", str(i), *args], stdout=log, stderr=subprocess.STDOUT
        )

    def metrics(self, i: int) -> list[dict[str, Any]]:
        path = self.state / f"peer-{i}" / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]

    def last_round(self, i: int) -> int:
        lines = self.metrics(i)
        return int(lines[-1]["round"]) if lines else 0

    def model(self, i: int) -> tuple[int, np.ndarray] | None:
        """Peer ``i``'s checkpoint now: the round it holds and its model (float64), if any."""
        path = self.state / f"peer-{i}" / "model.safetensors"
        try:  # one open: the file is replaced atomically, so round and model match
            with safe_open(str(path), "np") as fh:
                round_ = int((fh.metadata() or {})["round"])
                flat = [fh.get_tensor(k).ravel() for k in sorted(fh.keys())]
        except FileNotFoundError:
            return None
        return round_, np.concatenate(flat).astype(np.float64)

    def log(self, i: int) -> str:
        return (self.tmp / f"peer-{i}.log").read_text(errors="replace")

    wait_for = staticmethod(wait_for)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)  # a stopped process dies of SIGKILL anyway
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()


@pytest.fixture
def peer_procs(
    tmp_path: Path, ports: Callable[[int], list[int]]
) -> Iterator[Callable[..., PeerProcs]]:
    """``make(n, template, **fields)``: a ``PeerProcs`` in ``tmp_path``, stopped at the end."""
    made: list[PeerProcs] = []

    def make(n: int, template: str, **fields: Any) -> PeerProcs:
        made.append(PeerProcs(tmp_path, n, template, ports, **fields))
        return made[-1]

    try:
        yield make
    finally:
        for p in made:
            p.stop_all()
