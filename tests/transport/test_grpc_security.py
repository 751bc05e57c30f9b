"""Identity and admission over real mTLS on loopback (evidence 5, RELIABILITY 1-4)."""

from __future__ import annotations

import logging

import grpc
import numpy as np
import pytest

from murmura.errors import ConfigError, IdentityError
from murmura.transport import codec
from murmura.transport.background import ServerThread
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import ServerOptions, start_server
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Layout

pytestmark = pytest.mark.network

LAYOUT = Layout(("w",), ((12,),))
FAST = LinkOptions(call_timeout_s=5, pull_wait_s=0.5, max_retry_s=1.0, backoff_initial_s=0.05)


def _open_round(server: ServerThread, targets: set[str]) -> None:
    blob = codec.encode_blob(np.ones(12, np.float32), LAYOUT)
    out = Outgoing(1, pb.FIT, {}, blob, LAYOUT)
    server.call(server.hub.open_round(out, frozenset(targets)))


def test_valid_worker_gets_the_model(server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    _open_round(server, {"w1"})
    link = CoordinatorLink(server.target, "w1", pki.creds("w1"), FAST)
    assert link.register().run_id == "run-1"
    ins = link.pull(0)
    assert ins.kind == pb.FIT and ins.weights is not None and ins.weights.sum() == 12
    link.close()


def test_certificate_from_another_ca_fails_the_handshake(server: ServerThread, pki, caplog) -> None:  # type: ignore[no-untyped-def]
    _open_round(server, {"w1"})
    link = CoordinatorLink(server.target, "w1", pki.creds("w1", other_ca=True), FAST)
    with pytest.raises(IdentityError, match="a certificate the project CA did not issue"):
        link.pull(0)  # the link's own CA did not issue the coordinator's certificate
    # No application call was served: the node never reached the hub.
    assert server.hub.last_seen == {}
    assert server.hub.counters["accepted"] == 0
    link.close()


@pytest.mark.parametrize("name", ["outsider", "coordinator"])
def test_not_allowed_gets_permission_denied_before_model_bytes(
    server: ServerThread,
    pki,
    caplog,
    name: str,  # type: ignore[no-untyped-def]
) -> None:
    _open_round(server, {"w1", name})
    link = CoordinatorLink(server.target, name, pki.creds(name), FAST)
    caplog.set_level(logging.WARNING)
    for call in (link.register, lambda: link.pull(0)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert name not in server.hub.last_seen
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert any(name in m for m in refusals)
    assert server.hub.counters["refused_allowlist"] == 2
    link.close()


def test_claiming_another_id_is_refused(server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    link = CoordinatorLink(server.target, "w2", pki.creds("w1"), FAST)  # w1's cert, claims w2
    with pytest.raises(grpc.RpcError) as err:
        link.register()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    link.close()


def test_insecure_only_on_loopback_and_loudly(caplog) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    hub = Hub("r")
    with pytest.raises(ConfigError):
        asyncio.run(start_server(hub, ServerOptions(host="127.0.0.1")))  # no TLS, no flag
    with pytest.raises(ConfigError, match="without TLS"):
        asyncio.run(start_server(hub, ServerOptions(host="0.0.0.0", insecure=True)))
    caplog.set_level(logging.WARNING)
    with ServerThread(hub, ServerOptions(insecure=True)):
        pass
    assert any("INSECURE" in r.getMessage() for r in caplog.records)


def test_pull_and_heartbeat_claiming_another_id_are_refused(server: ServerThread, pki) -> None:  # type: ignore[no-untyped-def]
    link = CoordinatorLink(server.target, "w1", pki.creds("w1"), FAST)
    link.register()
    link.node = "w2"  # the certificate still says w1
    for call in (lambda: link.pull(0), lambda: link.heartbeat(0)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    link.close()
