"""Loopback ports for the tests' listeners, never handed to two of them at once.

A test that lays out its listeners before starting them needs ports nobody else will take
meanwhile, also under ``pytest -n`` (xdist workers and the node processes they start run at the
same time). ``bind(("127.0.0.1", 0))`` then close does not promise that: the port is free again
once the probe closes, so the kernel may hand it to another worker's probe or to any outgoing
connection as its source port, and two gRPC servers given one port either share it
(SO_REUSEPORT) or one fails to bind.

So ports come from a range below Linux's ephemeral range (the kernel never picks one of these
by itself), in turn, from one counter in a file that every process of every run on this machine
locks (``flock``) to take its ports; a port is handed out only if it binds now, and comes round
again only after the whole range has been handed out.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

LOW, HIGH = 20000, 32000
"""The range handed out: under the default ephemeral range, 32768-60999."""

COUNTER = Path(tempfile.gettempdir()) / f"murmura-test-ports-{os.getuid()}"
"""The next port to try, shared by all test processes of this user on this machine."""


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports on 127.0.0.1 that bind now and no other test was given lately."""
    ports: list[int] = []
    with open(COUNTER, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes
        fh.seek(0)
        text = fh.read().strip()
        port = int(text) if text.isdigit() and LOW <= int(text) < HIGH else LOW
        for _ in range(HIGH - LOW):
            if _bindable(port):
                ports.append(port)
            port = LOW + (port + 1 - LOW) % (HIGH - LOW)
            if len(ports) == n:
                break
        fh.seek(0)
        fh.truncate()
        fh.write(str(port))
    if len(ports) < n:
        raise RuntimeError(f"only {len(ports)} of {n} loopback ports in {LOW}-{HIGH} bind")
    return ports


def free_port() -> int:
    """One port as ``free_ports`` gives them."""
    return free_ports(1)[0]
