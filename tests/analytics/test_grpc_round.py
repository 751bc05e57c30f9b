"""The statistics phase on the hub, in process: workers' answers, a malformed one, the wire kind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from murmura.analytics.federation import StatsPlan
from murmura.analytics.grpc_round import STATS_KEY, site_answer, statistics_phase
from murmura.analytics.query import StatsQuery
from murmura.errors import InstructionRejected
from murmura.transport import codec
from murmura.transport.hub import Hub
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, MalformedMessage, decode_result, result_frames

QUERY = StatsQuery((0.0,), (10.0,), bins=5, classes=2)
PLAIN = StatsPlan(QUERY)


class Site:
    """A client that exposes its rows the way ``TorchClient.local_data`` does."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def local_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x, self.y


def _result(node: str, stats: list[float], n: int) -> DecodedResult:
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run", round=1, node=node, kind=pb.STATS,
        num_examples=n, stats=stats,
    )  # fmt: skip
    return decode_result(result_frames(header, None))


async def _phase(folder: Path, sites: dict[str, Site], plan: StatsPlan = PLAIN) -> None:
    hub = Hub("run")
    nodes = sorted([*sites, "evil", "odd"])
    for node in nodes:
        hub.touch(node)  # alive: joined with a heartbeat
    phase = asyncio.create_task(statistics_phase(hub, plan, 1, folder, nodes, 30))
    while hub.current is None:
        await asyncio.sleep(0.01)
    out = await hub.next_instruction("a", 0)
    assert out is not None and out.kind == pb.STATS and out.blob is None
    for node, site in sites.items():
        stats, n = site_answer(site, out.config)
        hub.admit(node, pb.ResultHeader(run_id="run", round=1, node=node, kind=pb.STATS))
        await hub.deliver(node, _result(node, stats, n))
    stats, n = site_answer(sites["a"], out.config)
    stats[1] += 1  # one row more than its histograms hold
    hub.admit("evil", pb.ResultHeader(run_id="run", round=1, node="evil", kind=pb.STATS))
    with pytest.raises(Exception, match="does not add up"):
        await hub.deliver("evil", _result("evil", stats, n))
    odd, n = site_answer(Site(np.ones((2, 3)), np.array([0, 1])), out.config)
    hub.admit("odd", pb.ResultHeader(run_id="run", round=1, node="odd", kind=pb.STATS))
    with pytest.raises(Exception, match="3 features, the other sites 2"):
        await hub.deliver("odd", _result("odd", odd, n))
    assert await phase is not None


def test_phase_merges_the_answers_and_lists_a_malformed_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    xa, xb = rng.uniform(0, 10, (7, 2)), rng.uniform(0, 10, (5, 2))
    ya, yb = np.array([0] * 7), np.array([0, 1, 1, 1, 1])
    phase = _phase(tmp_path, {"a": Site(xa, ya), "b": Site(xb, yb)})
    asyncio.run(asyncio.wait_for(phase, 10))
    body = json.loads((tmp_path / "stats.json").read_text())
    pooled = np.concatenate([xa, xb])
    assert body["count"] == 12 and body["sites"] == 2
    assert [f["mean"] for f in body["features"]] == pytest.approx(pooled.mean(axis=0))
    assert [f["variance"] for f in body["features"]] == pytest.approx(pooled.var(axis=0))
    assert body["site_labels"] == {"a": [7, 0], "b": [1, 4]} and body["labels"] == [8, 4]
    assert body["failures"]["evil"].startswith("statistics: update rejected: a histogram")
    assert body["failures"]["odd"] == "statistics: update rejected: 3 features, the other sites 2"
    assert (tmp_path / "label_share.png").exists()


def test_site_answer_refuses_what_it_cannot_answer() -> None:
    site = Site(np.ones((2, 1)), np.array([0, 1]))
    with pytest.raises(InstructionRejected, match="carries only 'stats_query'"):
        site_answer(site, {STATS_KEY: QUERY.to_json(), "lr": 0.1})
    with pytest.raises(InstructionRejected, match="malformed statistics query"):
        site_answer(site, {STATS_KEY: "[1, 2]"})
    with pytest.raises(InstructionRejected, match="no local_data"):
        site_answer(object(), {STATS_KEY: QUERY.to_json()})
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 2\)"):
        site_answer(Site(np.ones((1, 1)), np.array([5])), {STATS_KEY: QUERY.to_json()})


def test_only_a_stats_result_carries_numbers() -> None:
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run", round=1, node="a", kind=pb.STATS
    )
    with pytest.raises(MalformedMessage, match="STATS result needs its numbers"):
        decode_result(result_frames(header, None))
    header.kind, header.stats[:] = pb.EVALUATE, [1.0]
    with pytest.raises(MalformedMessage, match="no other result has any"):
        decode_result(result_frames(header, None))
    header.kind = pb.STATS
    assert decode_result(result_frames(header, None)).stats == (1.0,)


def test_deployed_phase_noises_and_accounts_under_dp(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    sites = {n: Site(rng.uniform(-5, 15, (50, 2)), rng.integers(0, 2, 50)) for n in "ab"}
    query = StatsQuery((0.0,), (10.0,), bins=5, classes=2, minmax=False, clip=True)
    plan = StatsPlan(query, noise_multiplier=1.0, delta=1e-6, seed=5)
    asyncio.run(asyncio.wait_for(_phase(tmp_path, sites, plan), 10))
    body = json.loads((tmp_path / "stats.json").read_text())
    assert body["epsilon"] > 0 and body["delta"] == 1e-6 and body["site_labels"] is None
    assert body["count"] != 100 and abs(body["count"] - 100) < 60  # sigma = sqrt(8)
    clipped = np.clip(np.concatenate([s.x for s in sites.values()]), 0.0, 10.0)
    assert [f["mean"] for f in body["features"]] == pytest.approx(clipped.mean(axis=0), abs=2)
    assert not (tmp_path / "label_share.png").exists()  # no site's own counts under DP
