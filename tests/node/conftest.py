from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from safetensors.numpy import load_file

from murmura.transport import keys

PROCS = Path(__file__).with_name("procs.py")


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that nobody listens on right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


@pytest.fixture
def ports() -> Callable[[int], list[int]]:
    """``free_ports`` for tests that lay out several listeners before starting them."""
    return free_ports


def make_keys(root: Path, names: list[str]) -> Path:
    keys.init_ca(root)
    keys.issue(root, "coordinator", "coordinator")
    for name in names:
        keys.issue(root, name, "worker")
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
