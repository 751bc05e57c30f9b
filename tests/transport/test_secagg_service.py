"""Secure aggregation answers over gRPC: big ones in chunks, bad streams refused by type.

An answer over one chunk goes through ``SendStream``; a declared length over the limit, a
truncated stream and a wrong digest are refused (RESOURCE_EXHAUSTED, INVALID_ARGUMENT) and
count as that node's answer, so the step neither waits for it nor lets it try again; a stream
bound to another run, round, step or node is refused without counting; the step goes on for
everyone else.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
import pytest

from murmura.transport.background import ServerThread
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Hub
from murmura.transport.proto import secagg_pb2 as spb
from murmura.transport.secagg_exchange import SecAggExchange
from murmura.transport.secagg_service import SECAGG_SERVICE, SecAggLink, secagg_handlers
from murmura.transport.secagg_stream import send_frames, stream_header

pytestmark = pytest.mark.network

NODES = ("w1", "w2", "w3", "w4", "w5", "w6")
STEP = spb.SECAGG_MASKED_INPUT
ROUND, LIMIT = 2, 5000
FAST = LinkOptions(call_timeout_s=5, pull_wait_s=0.5, max_retry_s=1.0, chunk_size=1024)


@contextmanager
def _serve(pki, max_secagg_bytes: int | None = None):  # type: ignore[no-untyped-def]
    """A coordinator endpoint with the SecAgg service, its MASKED_INPUT step open for NODES."""
    exchange = SecAggExchange("run-1")
    opts = ServerOptions(
        credentials=pki.creds("coordinator"),
        allowlist=frozenset(NODES),
        max_message_bytes=64 * 1024,
        max_secagg_bytes=max_secagg_bytes,
    )
    got: dict[str, bytes] = {}
    hub = Hub("run-1", heartbeat_s=0.5, lost_after_s=30.0)
    with ServerThread(hub, opts, [secagg_handlers(exchange)]) as st:
        receiver = lambda node, step, payload: got.__setitem__(node, payload)  # noqa: E731
        st.call(exchange.begin(ROUND, frozenset(NODES), receiver, LIMIT))
        st.call(exchange.open_step(STEP, {n: b"mask request" for n in NODES}))
        yield st, exchange, got


@pytest.fixture
def secagg(pki) -> Iterator[tuple[ServerThread, SecAggExchange, dict[str, bytes]]]:  # type: ignore[no-untyped-def]
    with _serve(pki) as served:
        yield served


def _link(server: ServerThread, pki, name: str, opts: LinkOptions = FAST) -> CoordinatorLink:  # type: ignore[no-untyped-def]
    link = CoordinatorLink(server.target, name, pki.creds(name), opts)
    link.register()
    return link


def _send(server: ServerThread, pki, name: str, payload: bytes, opts: LinkOptions = FAST):  # type: ignore[no-untyped-def]
    """Send ``payload`` as ``name``'s answer the way a worker does; the reply."""
    link = _link(server, pki, name, opts)
    try:
        return SecAggLink(link).send(ROUND, STEP, payload)
    finally:
        link.close()


def _stream(server: ServerThread, pki, name: str, frames: list[bytes]) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    link = _link(server, pki, name)
    call = link.channel.stream_unary(f"/{SECAGG_SERVICE}/SendStream")
    with pytest.raises(grpc.RpcError) as err:
        call(iter(frames), timeout=5)
    link.close()
    return err.value


def _frames(name: str, payload: bytes, round_: int = ROUND, step: spb.SecAggStep = STEP,
            run_id: str = "run-1", **claims: object) -> list[bytes]:  # fmt: skip
    header = stream_header(run_id, round_, name, step, payload)
    frames = list(send_frames(header, payload, 1000))
    for key, value in claims.items():
        setattr(header, key, value)
    frames[0] = spb.SecAggSendPart(header=header).SerializeToString()
    return frames


def _answer(name: str, size: int = 4000) -> bytes:
    return (name.encode() * size)[:size]


def test_big_answers_stream_and_bad_streams_are_refused_by_type(secagg, pki) -> None:  # type: ignore[no-untyped-def]
    server, exchange, got = secagg
    reply = _send(server, pki, "w1", _answer("w1"))  # 4000 B > one 1024 B chunk: streamed
    assert reply.accepted and not reply.duplicate
    assert _send(server, pki, "w1", _answer("w1")).duplicate  # a retry is counted once

    err = _stream(server, pki, "w2", _frames("w2", _answer("w2"), length=LIMIT + 1))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "SizeLimitExceeded" in (err.details() or "")
    err = _stream(server, pki, "w3", _frames("w3", _answer("w3"))[:-1])  # last chunk missing
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LengthMismatch" in (err.details() or "")
    err = _stream(server, pki, "w4", _frames("w4", _answer("w4"), sha256=b"\1" * 32))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "DigestMismatch" in (err.details() or "")
    one_message = LinkOptions(call_timeout_s=5, max_retry_s=1.0, chunk_size=LIMIT + 1000)
    with pytest.raises(grpc.RpcError) as e:  # Send, one message, over the limit
        _send(server, pki, "w6", _answer("w6", LIMIT + 1), one_message)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    # Unbound or bound elsewhere: refused, not counted; the node may still answer its step.
    good, code = _answer("w5"), grpc.StatusCode
    for frames, want in (
        ([], code.INVALID_ARGUMENT),
        (_frames("w5", good, version=1), code.INVALID_ARGUMENT),
        (_frames("w5", good, round_=ROUND + 1), code.FAILED_PRECONDITION),
        (_frames("w5", good, step=spb.SECAGG_UNMASK), code.FAILED_PRECONDITION),
        (_frames("w5", good, run_id="run-0"), code.FAILED_PRECONDITION),
        (_frames("w6", good), code.PERMISSION_DENIED),  # the certificate says w5
    ):
        assert _stream(server, pki, "w5", frames).code() == want
    assert _send(server, pki, "w5", good).accepted

    for name in ("w3", "w6"):  # a refused answer gets no second try
        with pytest.raises(grpc.RpcError) as e:
            _send(server, pki, name, _answer(name))
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS

    t0 = time.monotonic()
    missing = server.call(exchange.wait_step(STEP, 10, lambda: list(NODES)))
    assert missing == frozenset() and time.monotonic() - t0 < 2
    refused = exchange.refusals(STEP)
    assert sorted(refused) == ["w2", "w3", "w4", "w6"]
    assert "SizeLimitExceeded" in refused["w2"] and "DigestMismatch" in refused["w4"]
    assert got == {"w1": _answer("w1"), "w5": good}


def test_the_configured_limit_replaces_the_rounds_own(pki) -> None:  # type: ignore[no-untyped-def]
    with _serve(pki, max_secagg_bytes=2000) as (server, exchange, got):
        with pytest.raises(grpc.RpcError) as e:  # under the round's 5000 B, over the 2000 B
            _send(server, pki, "w1", _answer("w1", 3000))
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _send(server, pki, "w2", _answer("w2", 2000)).accepted
        assert got == {"w2": _answer("w2", 2000)}
