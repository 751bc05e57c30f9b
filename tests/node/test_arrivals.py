"""The async coordinator's buffer: ``take`` (pure) and the SQLite ``ArrivalLog``.

Properties: arrivals are taken in order, at most ``buffer_size`` usable ones per aggregation,
a refusal exactly when staleness exceeds ``max_staleness``; a log closed at any point (a
killed coordinator) and reopened gives every aggregation the same arrivals as one never
interrupted, each arrival in exactly one aggregation.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ConfigError
from murmura.node.arrivals import Arrival, ArrivalLog, take
from murmura.node.async_coordinator import AsyncCoordinator
from murmura.node.coordinator import CoordinatorSettings
from murmura.simtime.arrival import AsyncRule, stale_reason, weighted_update
from murmura.simtime.staleness import constant, polynomial
from murmura.strategy import FedAvg
from murmura.strategy.secure import SecAggParams, SecureAggregation
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import Layout

# (base version, failed) of each arrival, in arrival order
arrivals = st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=30)


def _arrival(seq: int, base: int, failed: bool) -> Arrival:
    reason = "worker error: boom" if failed else None
    payload = None if failed else np.full(3, seq, dtype=np.float32)
    return Arrival(seq, f"w{seq % 3}", seq, base, 10, {}, payload, reason, None, None)


@given(arrivals, st.integers(0, 8), st.integers(1, 4), st.none() | st.integers(0, 3))
def test_take_is_an_in_order_prefix_that_stops_at_a_full_buffer(
    spec: list[tuple[int, bool]], version: int, k: int, max_staleness: int | None
) -> None:
    pending = [_arrival(i + 1, min(b, version), f) for i, (b, f) in enumerate(spec)]
    got = take(pending, version, 0, k, max_staleness)
    assert [a.arrival for a in got] == pending[: len(got)]
    usable = [a for a in got if a.reason is None]
    assert len(usable) <= k
    if len(got) < len(pending):  # it stopped early: the buffer is full
        assert len(usable) == k and got[-1].reason is None
    for a in got:
        assert a.tau == version - a.arrival.base
        expected = a.arrival.reason or stale_reason(a.tau, max_staleness)
        assert a.reason == expected


def test_take_counts_what_the_buffer_already_holds() -> None:
    pending = [_arrival(i, 0, False) for i in range(1, 5)]
    assert [a.arrival.seq for a in take(pending, 2, 1, 3, None)] == [1, 2]
    assert take(pending, 2, 3, 3, None) == []
    got = take(pending, 5, 0, 2, 3)  # staleness 5 > 3: all refused, none usable
    assert [a.reason for a in got] == ["stale: staleness 5 > clock.max_staleness 3"] * 4


@given(st.integers(0, 50), st.floats(0.01, 1.0), st.floats(0.0, 2.0))
def test_weighted_update_is_the_papers_scaling(tau: int, mixing: float, a: float) -> None:
    delta = np.linspace(-1, 1, 7, dtype=np.float32)
    buff = AsyncRule("fedbuff", 4, mixing, polynomial(a), None, 2)
    fedasync = AsyncRule("fedasync", 1, mixing, polynomial(a), None, 2)
    s = (1.0 + tau) ** -a
    np.testing.assert_allclose(weighted_update(buff, tau, delta), delta * s, rtol=1e-5)
    np.testing.assert_allclose(weighted_update(fedasync, tau, delta), delta * s * mixing, rtol=1e-5)
    assert weighted_update(AsyncRule("fedbuff", 1, 1.0, constant, None, 1), tau, delta) is not delta


def _drain(log: ArrivalLog, version: int, k: int, max_staleness: int | None) -> int:
    """Assign what waits to the aggregation after ``version``; return how many are usable."""
    have = sum(a.reason is None for a in log.of_round(version + 1))
    for a in take(log.unassigned(), version, have, k, max_staleness):
        log.assign(a.arrival.seq, version + 1, a.tau, a.reason)
        have += a.reason is None
    return have


def _run(
    path: Path, spec: list[tuple[int, bool]], k: int, crash_at: int | None
) -> list[list[tuple[int, int | None, str | None]]]:
    """Feed arrivals one by one, aggregating when full; reopen the log at ``crash_at``."""
    log, version, rounds = ArrivalLog(path, "run"), 0, []
    for i, (base, failed) in enumerate(spec):
        if i == crash_at:  # killed: whatever was not recorded is gone from memory
            log.close()
            log = ArrivalLog(path, "run")
        ticket = log.next_ticket()
        a = _arrival(ticket, min(base, version), failed)
        log.add(a.node, ticket, a.base, 10, {"i": float(i)}, a.payload, a.reason)
        if _drain(log, version, k, 2) == k:
            version += 1
            rounds.append([(a.ticket, a.tau, a.reason) for a in log.of_round(version)])
            log.drop_through(version)
    log.close()
    return rounds


@settings(max_examples=10, deadline=None)  # every write is fsynced: keep the examples short
@given(
    st.lists(st.tuples(st.integers(0, 6), st.booleans()), max_size=12),
    st.integers(1, 3),
    st.integers(0, 12),
)
def test_a_reopened_log_loses_and_repeats_nothing(
    tmp_path_factory: pytest.TempPathFactory, spec: list[tuple[int, bool]], k: int, crash: int
) -> None:
    base = tmp_path_factory.mktemp("log")
    straight = _run(base / "a.sqlite", spec, k, None)
    crashed = _run(base / "b.sqlite", spec, k, crash)
    assert crashed == straight
    tickets = [t for r in straight for t, _, _ in r]
    assert len(tickets) == len(set(tickets))
    assert all(sum(reason is None for *_, reason in r) == k for r in straight)


def test_the_log_keeps_updates_bitwise_and_tickets_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    log = ArrivalLog(path, "run")
    update = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    assert [log.next_ticket(), log.next_ticket()] == [1, 2]
    log.add("w0", 2, 0, 12, {"train_loss": 0.5}, update)
    log.close()
    log = ArrivalLog(path, "run")
    assert log.next_ticket() == 3
    (got,) = log.unassigned()
    assert got.node == "w0" and got.num_examples == 12 and got.metrics == {"train_loss": 0.5}
    assert got.payload is not None and got.payload.tobytes() == update.tobytes()
    assert ArrivalLog(path, "other").unassigned() == []  # another run's buffer is its own


def _coordinator(tmp_path: Path, strategy: object, every: int = 1) -> AsyncCoordinator:
    settings = CoordinatorSettings(state_dir=tmp_path / "s", checkpoint_every=every)
    rule = AsyncRule("fedbuff", 2, 0.6, constant, None, 2)
    layout = Layout(("a",), ((4,),))
    return AsyncCoordinator(
        strategy,
        np.zeros(4, np.float32),
        layout,
        settings,
        ServerOptions(),
        rule,  # type: ignore[arg-type]
    )


def test_the_async_coordinator_refuses_what_it_cannot_honour(tmp_path: Path) -> None:
    secure = SecureAggregation(FedAvg(min_clients=1), SecAggParams(threshold=2))
    with pytest.raises(ConfigError, match="secagg.enabled = true with clock.mode = 'async'"):
        _coordinator(tmp_path, secure)
    with pytest.raises(ConfigError, match=r"\[server\] checkpoint_every = 3 with clock.mode"):
        _coordinator(tmp_path, FedAvg(min_clients=1), every=3)
    assert not (tmp_path / "s").exists()  # refused before any state was written


def _result(node: str, update: np.ndarray, n: int) -> DecodedResult:
    return DecodedResult("run", 0, node, pb.FIT, n, 0.0, {}, update, b"", wire_bytes=update.nbytes)


@pytest.mark.parametrize("algorithm", ["fedasync", "fedbuff"])
def test_an_arrival_is_weighted_as_in_the_simulation(tmp_path: Path, algorithm: str) -> None:
    """Through the coordinator's own arrival path: sink, SQLite, take, aggregate (FedAvg)."""
    rng = np.random.default_rng(1)
    w0, w1, u, v = (rng.standard_normal(4).astype(np.float32) for _ in range(4))
    settings = CoordinatorSettings(state_dir=tmp_path / "s", rounds=3)
    rule = AsyncRule(algorithm, 2, 0.6, polynomial(0.5), 3, 2)
    layout = Layout(("a",), ((4,),))
    coord = AsyncCoordinator(FedAvg(min_clients=1), w0, layout, settings, ServerOptions(), rule)
    coord.run_id = coord._open_run().run_id
    assert coord.arrivals is not None
    coord.round_done, coord.weights, coord.models = 1, w1, {0: w0, 1: w1}
    coord._sink(1, 0)("w0", 1, _result("w0", u, 10))  # trained on model 0: staleness 1
    coord._sink(2, 1)("w1", 2, _result("w1", v, 30))  # trained on model 1: staleness 0
    assert coord._take(2, 0) == 2
    new, metrics, nodes = asyncio.run(coord._aggregate(2))
    if algorithm == "fedasync":  # alpha s(tau) (w_k - w), w_k = the model it got + its update
        rows = [0.6 * 2**-0.5 * (w0 + u - w1), 0.6 * (w1 + v - w1)]
    else:  # s(tau) delta_k
        rows = [2**-0.5 * u, v]
    expected = w1 + (10 * rows[0] + 30 * rows[1]) / 40
    assert new is not None
    np.testing.assert_allclose(new, expected, rtol=1e-5, atol=1e-6)
    assert nodes == ["w0", "w1"] and metrics.extra["staleness_max"] == 1
    coord.arrivals.close()
    coord.state.close()
    coord.ledger.close()
