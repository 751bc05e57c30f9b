from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from murmura.transport import keys
from murmura.transport.background import ServerThread
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Hub

WORKERS = ("w1", "w2", "w3", "w4", "w5", "w6", "w7")


@dataclass
class Pki:
    root: Path
    other: Path

    def creds(self, name: str, other_ca: bool = False) -> keys.Credentials:
        f = keys.node_files(self.other if other_ca else self.root, name)
        return keys.Credentials.load(f.cert, f.key, f.ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root, other = tmp_path_factory.mktemp("pki"), tmp_path_factory.mktemp("other-pki")
    keys.init_ca(root)
    keys.issue(root, "coordinator", "coordinator")
    for name in (*WORKERS, "outsider"):
        keys.issue(root, name, "worker")
    keys.init_ca(other)
    keys.issue(other, "w1", "worker")  # same name, foreign CA
    return Pki(root, other)


@pytest.fixture
def server(pki: Pki) -> Iterator[ServerThread]:
    opts = ServerOptions(
        credentials=pki.creds("coordinator"),
        allowlist=frozenset(WORKERS),
        max_update_bytes=4 * 12,
        max_message_bytes=64 * 1024,
        chunk_size=16,
    )
    with ServerThread(Hub("run-1", heartbeat_s=0.5, lost_after_s=30.0), opts) as st:
        yield st
