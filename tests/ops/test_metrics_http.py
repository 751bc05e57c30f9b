"""The /metrics HTTP endpoint: serves the exposition, 404 elsewhere, loopback unless allowed."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from murmura.errors import ConfigError
from murmura.ops.metrics import CoordinatorMetrics
from murmura.ops.metrics_http import MetricsEndpoint, MetricsServer, is_loopback, serve_metrics

pytestmark = pytest.mark.network


@pytest.fixture
def served() -> Iterator[tuple[CoordinatorMetrics, MetricsServer]]:
    metrics = CoordinatorMetrics(process=False)
    server = serve_metrics(metrics.exposition, MetricsEndpoint())
    try:
        yield metrics, server
    finally:
        server.close()


def test_serves_the_exposition(served: tuple[CoordinatorMetrics, MetricsServer]) -> None:
    metrics, server = served
    metrics.observe("join", "w0", 0, {})
    assert server.host == "127.0.0.1" and server.port > 0
    with urllib.request.urlopen(server.url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        body = resp.read()
    assert body == metrics.exposition()
    assert b"\nmurmura_joins_total 1.0\n" in body


def test_other_paths_and_methods(served: tuple[CoordinatorMetrics, MetricsServer]) -> None:
    _, server = served
    base = server.url.removesuffix("/metrics")
    with pytest.raises(urllib.error.HTTPError) as not_found:
        urllib.request.urlopen(base + "/", timeout=5)
    assert not_found.value.code == 404
    not_found.value.close()
    with pytest.raises(urllib.error.HTTPError) as post:
        urllib.request.urlopen(urllib.request.Request(server.url, b"x", method="POST"), timeout=5)
    assert post.value.code == 405
    post.value.close()
    with urllib.request.urlopen(server.url + "?name[]=x", timeout=5) as resp:
        assert resp.status == 200


def test_a_failing_render_is_a_500_and_the_server_goes_on() -> None:
    calls = []

    def render() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return b"ok\n"

    server = serve_metrics(render, MetricsEndpoint())
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url, timeout=5)
        assert err.value.code == 500
        err.value.close()
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            assert resp.read() == b"ok\n"
    finally:
        server.close()


def test_close_frees_the_port() -> None:
    server = serve_metrics(lambda: b"", MetricsEndpoint())
    port = server.port
    server.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_a_busy_port_is_a_config_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            serve_metrics(lambda: b"", MetricsEndpoint(port=s.getsockname()[1]))


def test_non_loopback_host_needs_allow_remote() -> None:
    with pytest.raises(ConfigError, match="metrics_allow_remote"):
        MetricsEndpoint(host="0.0.0.0", port=9100)
    assert MetricsEndpoint(host="0.0.0.0", port=9100, allow_remote=True).allow_remote
    assert MetricsEndpoint(host="::1").host == "::1"
    with pytest.raises(ConfigError, match="0..65535"):
        MetricsEndpoint(port=70000)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("[::1]", True), ("0.0.0.0", False), ("::", False), ("10.0.0.1", False),
     ("example.org", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
