"""The coordinator's monitoring glue: [server] metrics keys, the events tee, the worker gauge."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import pytest

from murmura.errors import ConfigError
from murmura.node.deploy import ServerSection, build_coordinator, metrics_endpoint, split_config
from murmura.node.monitoring import Monitor
from murmura.ops.metrics_http import MetricsEndpoint
from murmura.transport.hub import Hub
from murmura.types import Scalar


def test_metrics_are_off_by_default() -> None:
    assert metrics_endpoint(ServerSection()) is None


def test_metrics_keys_of_a_config_file(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text('[server]\nmetrics_port = 9464\nmetrics_host = "::1"\n')
    _, section = split_config(path)
    assert metrics_endpoint(section) == MetricsEndpoint("::1", 9464, False)


def test_a_remote_metrics_host_is_refused_before_the_run_is_built(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text('[server]\nmetrics_port = 9464\nmetrics_host = "0.0.0.0"\n')
    cfg, section = split_config(path)
    with pytest.raises(ConfigError, match="refusing to serve metrics on '0.0.0.0'"):
        build_coordinator(cfg, section, insecure=True)
    _, allowed = split_config(path, ["server.metrics_allow_remote=true"])
    assert metrics_endpoint(allowed) == MetricsEndpoint("0.0.0.0", 9464, True)


def test_events_go_to_the_ledger_first_then_to_the_metrics() -> None:
    monitor = Monitor()
    seen: list[str] = []

    def ledger(event: str, node: str, round_: int, details: Mapping[str, Scalar]) -> None:
        seen.append(event)

    events = monitor.events(ledger)
    events("join", "w0", 0, {})
    events("model_sent", "w0", 1, {"bytes": 12})
    assert seen == ["join", "model_sent"]
    text = monitor.metrics.exposition().decode()
    assert "murmura_joins_total 1.0" in text and "murmura_model_sent_bytes_total 12.0" in text


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return bytes(resp.read())


@pytest.mark.network
def test_monitor_serves_and_tracks_connected_workers() -> None:
    async def run() -> tuple[bytes, bool]:
        hub = Hub("run", heartbeat_s=0.05, lost_after_s=60.0)
        monitor = Monitor(MetricsEndpoint())
        await Monitor().start(hub, 0.01)  # no endpoint: nothing to serve or watch
        await monitor.start(hub, 0.01)
        assert monitor.server is not None
        url = monitor.server.url
        try:
            hub.touch("w0")
            hub.touch("w1")
            await asyncio.sleep(0.1)
            body = await asyncio.to_thread(fetch, url)
        finally:
            await monitor.stop()
        return body, monitor.server is None

    body, stopped = asyncio.run(run())
    assert b"\nmurmura_workers_connected 2.0\n" in body and stopped
