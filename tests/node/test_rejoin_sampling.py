"""A round is started only once it could be sampled (issue 11, defect 2): fast, in-process.

The coordinator's sampling waits, woken by node registrations, up to ``rejoin_timeout_s``;
past it ``RejoinTimeout`` and nothing of the round is recorded (state, ledger, metrics). An
edge with no children fails its parent's round at once. Process-level evidence:
``test_rejoin_grpc.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from murmura.engine.edge_round import EdgeRoundFailed
from murmura.errors import RejoinTimeout
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.deploy import ServerSection
from murmura.node.edge import Edge, EdgeClient, EdgeSettings
from murmura.strategy import FedAvg
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Hub
from murmura.types import FitIns, Layout

LAYOUT = Layout(("w",), ((4,),))


def _coordinator(tmp: Path, rejoin_s: float, min_clients: int = 2) -> tuple[Coordinator, str]:
    settings = CoordinatorSettings(
        state_dir=tmp, rounds=5, run_name="t", rejoin_timeout_s=rejoin_s, lost_after_s=5.0
    )
    weights = np.zeros(LAYOUT.size, dtype=np.float32)
    c = Coordinator(
        FedAvg(min_clients=min_clients, seed=0), weights, LAYOUT, settings, ServerOptions()
    )
    rec = c._open_run()
    c.hub = Hub(rec.run_id, 0.1, settings.lost_after_s)
    return c, rec.run_id


def _close(c: Coordinator) -> None:
    c.state.close()
    c.ledger.close()


@pytest.mark.parametrize("rejoin_s", [0.0, 0.4])
def test_a_round_that_cannot_be_sampled_is_never_started(tmp_path: Path, rejoin_s: float) -> None:
    c, run_id = _coordinator(tmp_path, rejoin_s)
    assert c.hub is not None
    c.hub.touch("w0")  # 1 live node < min_clients 2

    async def go() -> float:
        t0 = time.monotonic()
        with pytest.raises(RejoinTimeout, match="rejoin_timeout") as err:
            await c.run_round(run_id, 1)
        assert err.value.reason == "round 1: 1 nodes available, min_clients is 2"
        return time.monotonic() - t0

    try:
        waited = asyncio.run(go())
        assert rejoin_s <= waited < rejoin_s + 0.5
        assert c.state.rounds(run_id) == []  # not even "running"
        assert c.state.run(run_id).status == "running"  # resumable
        assert c.ledger.head is None
        assert not (c.run_path / "metrics.jsonl").exists()
    finally:
        _close(c)


def test_sampling_wakes_when_a_node_comes_back(tmp_path: Path) -> None:
    c, run_id = _coordinator(tmp_path, rejoin_s=30.0)
    hub = c.hub
    assert hub is not None

    async def go() -> tuple[list[str], list[str], float]:
        asyncio.get_running_loop().call_later(0.3, hub.touch, "w0")
        asyncio.get_running_loop().call_later(0.5, hub.touch, "w1")
        t0 = time.monotonic()
        nodes, plan = await c._sample(run_id, 1, first=False)
        return nodes, plan.cohort, time.monotonic() - t0

    try:
        nodes, cohort, waited = asyncio.run(go())
        assert nodes == cohort == ["w0", "w1"]
        assert 0.5 <= waited < 0.9  # woken by the registration, not by a poll
    finally:
        _close(c)


def test_an_edge_without_children_fails_the_parents_round_at_once(tmp_path: Path) -> None:
    coordinator = CoordinatorSettings(state_dir=tmp_path, run_name="t-edge")  # rejoin 600
    settings = EdgeSettings("edge-1", "127.0.0.1:1", coordinator, ServerOptions(), None)
    edge = Edge(settings, FedAvg(min_clients=1, seed=0), LAYOUT).coordinator
    rec = edge.state.open_run("t-edge", "t-edge-1", {})
    edge.run_path = tmp_path / "run"
    edge.hub = Hub(rec.run_id, 0.1, 5.0)

    async def go() -> float:
        client = EdgeClient(edge, rec.run_id, 1, asyncio.get_running_loop())
        client.first = False
        t0 = time.monotonic()
        with pytest.raises(EdgeRoundFailed, match="cannot sample its children"):
            await client._fit(FitIns(1, np.zeros(LAYOUT.size, dtype=np.float32), {}))
        return time.monotonic() - t0

    try:
        assert asyncio.run(go()) < 0.5
        assert edge.state.rounds(rec.run_id) == []
    finally:
        _close(edge)


def test_rejoin_timeout_is_a_server_setting() -> None:
    assert ServerSection().rejoin_timeout == 600.0
    assert ServerSection(rejoin_timeout=0).rejoin_timeout == 0.0
    with pytest.raises(ValueError, match="rejoin_timeout"):
        ServerSection(rejoin_timeout=-1)
