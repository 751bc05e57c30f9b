"""``dial_check``: the role and name of the certificate at the address a node dials.

Each test dials a real gRPC server on 127.0.0.1 (mTLS, client certificate required) that
presents a certificate issued by ``murmura keys``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from portpool import free_port

from murmura.errors import IdentityError
from murmura.transport import dial_check, keys
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions

pytestmark = pytest.mark.network

Serve = Callable[[Path, str], str]


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    keys.init_ca(d)
    keys.issue(d, "coordinator", "coordinator")
    keys.issue(d, "edge-1", "edge")
    for name in ("w1", "w2"):
        keys.issue(d, name, "worker")
    return d


def creds(d: Path, name: str) -> keys.Credentials:
    f = keys.node_files(d, name)
    return keys.Credentials.load(f.cert, f.key, f.ca)


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a gRPC server with no services that presents ``name``'s certificate."""
    servers: list[grpc.Server] = []

    def start(d: Path, name: str) -> str:
        c = creds(d, name)
        server = grpc.server(futures.ThreadPoolExecutor(2))
        tls = grpc.ssl_server_credentials(
            [(c.key, c.cert)], root_certificates=c.ca, require_client_auth=True
        )
        port = server.add_secure_port("127.0.0.1:0", tls)
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(None)


def test_a_coordinator_or_an_edge_may_be_a_parent(key_dir: Path, serve: Serve) -> None:
    me = creds(key_dir, "w1")
    got = dial_check.parent_identity(serve(key_dir, "coordinator"), me, timeout_s=5)
    assert (got.name, got.role) == ("coordinator", "coordinator")
    got = dial_check.parent_identity(serve(key_dir, "edge-1"), me, timeout_s=5)
    assert (got.name, got.role) == ("edge-1", "edge")


def test_a_worker_certificate_is_refused_as_a_parent(key_dir: Path, serve: Serve) -> None:
    target = serve(key_dir, "w2")
    with pytest.raises(IdentityError) as info:
        dial_check.parent_identity(target, creds(key_dir, "w1"), timeout_s=5)
    assert str(info.value) == (
        f"the node at {target} holds a worker certificate ('w2'), not a coordinator or edge "
        "certificate: refusing to work for it"
    )
    # a worker that knows its parent is the root refuses an edge there
    with pytest.raises(IdentityError, match="edge certificate .'edge-1'., not a coordinator"):
        dial_check.parent_identity(
            serve(key_dir, "edge-1"), creds(key_dir, "w1"), roles=("coordinator",), timeout_s=5
        )


def test_an_expected_parent_name_is_checked(key_dir: Path, serve: Serve) -> None:
    target = serve(key_dir, "coordinator")
    with pytest.raises(IdentityError, match="coordinator 'coordinator', not the expected 'root'"):
        dial_check.parent_identity(target, creds(key_dir, "w1"), name="root", timeout_s=5)


def test_a_neighbour_must_be_the_named_worker(key_dir: Path, serve: Serve) -> None:
    me = creds(key_dir, "w1")
    target = serve(key_dir, "w2")
    assert dial_check.neighbour_identity(target, me, "w2", timeout_s=5).name == "w2"
    with pytest.raises(IdentityError, match="named 'w2', not the worker certificate of .*'w3'"):
        dial_check.neighbour_identity(target, me, "w3", timeout_s=5)
    with pytest.raises(IdentityError, match="holds a coordinator certificate"):
        dial_check.neighbour_identity(serve(key_dir, "coordinator"), me, "coordinator", 5)


def test_a_foreign_ca_is_an_identity_error(key_dir: Path, tmp_path: Path, serve: Serve) -> None:
    other = tmp_path / "other"
    keys.init_ca(other)
    keys.issue(other, "coordinator", "coordinator")
    with pytest.raises(IdentityError, match="a certificate the project CA did not issue"):
        dial_check.parent_identity(serve(other, "coordinator"), creds(key_dir, "w1"), timeout_s=5)


def test_nothing_listening_is_unreachable(key_dir: Path) -> None:
    port = free_port()  # binds, but nobody listens on it
    with pytest.raises(dial_check.Unreachable, match="no TLS handshake"):
        dial_check.peer_identity(f"127.0.0.1:{port}", creds(key_dir, "w1"))
    with pytest.raises(IdentityError, match="expected HOST:PORT"):
        dial_check.peer_identity("nowhere", creds(key_dir, "w1"))


def test_the_link_registers_with_nobody_but_a_parent(key_dir: Path, serve: Serve) -> None:
    """The worker's link refuses before its first call; its channel is never opened."""
    target = serve(key_dir, "w2")
    link = CoordinatorLink(target, "w1", creds(key_dir, "w1"), LinkOptions(max_retry_s=1))
    with pytest.raises(IdentityError, match="holds a worker certificate"):
        link.register()
    assert link.parent is None
    for call in (lambda: link.pull(0), lambda: link.heartbeat(1)):
        with pytest.raises(IdentityError):
            call()
    assert link._channel is None  # nothing was ever sent on a gRPC channel
    link.close()
    strict = LinkOptions(max_retry_s=1, parent_roles=("coordinator",))
    link = CoordinatorLink(serve(key_dir, "edge-1"), "w1", creds(key_dir, "w1"), strict)
    with pytest.raises(IdentityError, match="an edge certificate .'edge-1'., not a coord"):
        link.register()
    link.close()
