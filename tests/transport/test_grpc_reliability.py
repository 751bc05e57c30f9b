"""Deadlines, retries and keepalive of the worker link (RELIABILITY 5, 6, 7)."""

from __future__ import annotations

import random
import time

import grpc
import pytest

from murmura.transport import codec
from murmura.transport.background import ServerThread
from murmura.transport.grpc_client import (
    CoordinatorLink,
    LinkOptions,
    backoff_delays,
    channel_options,
)
from murmura.transport.grpc_server import SERVICE, ServerOptions, server_channel_options
from murmura.transport.proto import murmura_pb2 as pb


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _link(opts: LinkOptions) -> CoordinatorLink:
    return CoordinatorLink("127.0.0.1:9", "w1", None, opts, seed=1)


def test_backoff_is_exponential_with_full_jitter() -> None:
    delays = backoff_delays(0.1, 2.0, random.Random(0))
    got = [next(delays) for _ in range(10)]
    caps = [min(2.0, 0.1 * 2**k) for k in range(10)]
    assert all(0 <= d <= c for d, c in zip(got, caps, strict=True))
    assert len(set(got)) == 10  # jittered, not a fixed schedule


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
    ],
)
def test_only_unavailable_is_retried(code: grpc.StatusCode) -> None:
    link = _link(LinkOptions(backoff_initial_s=0.001, max_retry_s=5))
    calls: list[int] = []

    def fail() -> None:
        calls.append(1)
        raise _Err(code)

    with pytest.raises(grpc.RpcError):
        link.retrying("x", fail)
    assert len(calls) == 1
    link.close()


def test_unavailable_is_retried_until_it_works_or_the_budget_ends() -> None:
    link = _link(LinkOptions(backoff_initial_s=0.001, backoff_max_s=0.01, max_retry_s=0.3))
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise _Err(grpc.StatusCode.UNAVAILABLE)
        return "ok"

    assert link.retrying("x", flaky) == "ok" and len(calls) == 4
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError):
        link.retrying("x", lambda: (_ for _ in ()).throw(_Err(grpc.StatusCode.UNAVAILABLE)))
    assert time.monotonic() - t0 < 1.0
    link.close()


@pytest.mark.network
def test_a_held_call_ends_in_deadline_exceeded_within_the_deadline(
    server: ServerThread, pki
) -> None:  # type: ignore[no-untyped-def]
    link = CoordinatorLink(server.target, "w1", pki.creds("w1"), LinkOptions())
    link.register()
    pull = link.channel.unary_stream(f"/{SERVICE}/Pull")
    req = pb.PullRequest(version=codec.PROTOCOL_VERSION, run_id="run-1", node="w1", wait_ms=15_000)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        list(pull(req.SerializeToString(), timeout=0.5))
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - t0 < 1.5
    assert link.heartbeat(0).round == 0  # the server is still serving
    link.close()


def test_keepalive_settings_match() -> None:
    server = dict(server_channel_options(ServerOptions()))
    client = dict(channel_options(LinkOptions()))
    # The client never pings faster than the server permits, and both detect dead links.
    assert (
        client["grpc.keepalive_time_ms"] >= server["grpc.http2.min_ping_interval_without_data_ms"]
    )
    assert server["grpc.http2.max_ping_strikes"] > 0
    for opts in (client, server):  # an unacked keepalive ping fails the link this soon
        assert opts["grpc.http2.ping_timeout_ms"] == opts["grpc.keepalive_timeout_ms"]
    assert (
        client["grpc.keepalive_timeout_ms"] <= 20_000 and server["grpc.keepalive_time_ms"] <= 60_000
    )


def test_insecure_link_only_to_loopback() -> None:
    from murmura.errors import ConfigError

    with pytest.raises(ConfigError, match="TLS is required"):
        CoordinatorLink("10.1.2.3:5000", "w1", None)
    CoordinatorLink("localhost:5000", "w1", None).close()
