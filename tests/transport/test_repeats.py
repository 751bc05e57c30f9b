"""RepeatLimiter and PullSlots: a flood costs one record per window, memory stays bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from murmura.ops.metrics import CoordinatorMetrics
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.repeats import PullSlots, Repeat, RepeatLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_passes_repeats_are_counted_and_summarised_when_the_window_closes() -> None:
    clock = Clock()
    lim = RepeatLimiter(window_s=60.0, clock=clock)
    assert lim.first("intruder", "refuse:PERMISSION_DENIED", {"reason": "not allowed"})
    for _ in range(1499):
        clock.now += 0.004
        assert not lim.first("intruder", "refuse:PERMISSION_DENIED", {"reason": "ignored"})
    assert lim.closed() == []  # the window is still open
    clock.now = 60.0
    (rep,) = lim.closed()
    assert (rep.identity, rep.kind, rep.count) == ("intruder", "refuse:PERMISSION_DENIED", 1499)
    assert rep.seconds == pytest.approx(1499 * 0.004)
    assert rep.details == {"reason": "not allowed"}  # the first event's details
    assert len(lim) == 0 and lim.closed() == []
    # a new window: the next event is a first again
    assert lim.first("intruder", "refuse:PERMISSION_DENIED")


def test_keys_are_per_identity_and_kind_and_a_lone_event_leaves_no_summary() -> None:
    clock = Clock()
    lim = RepeatLimiter(window_s=10.0, clock=clock)
    assert lim.first("a", "refuse:X")
    assert lim.first("b", "refuse:X")
    assert lim.first("a", "join:cert")
    assert not lim.first("a", "refuse:X")
    clock.now = 10.0
    assert [(r.identity, r.kind, r.count) for r in lim.closed()] == [("a", "refuse:X", 1)]


def test_drain_closes_every_window_at_shutdown() -> None:
    clock = Clock()
    lim = RepeatLimiter(clock=clock)
    for name in ("a", "b", "c"):
        lim.first(name, "k")
        for _ in range(3 if name != "b" else 0):
            lim.first(name, "k")
    got = lim.drain()
    assert [(r.identity, r.count) for r in got] == [("a", 3), ("c", 3)]
    assert len(lim) == 0 and lim.drain() == []


def test_repeat_counts_an_event_recorded_elsewhere() -> None:
    lim = RepeatLimiter(clock=Clock())
    lim.repeat("w0", "model_sent:r1")
    lim.repeat("w0", "model_sent:r1")
    (rep,) = lim.drain()
    assert rep.count == 2


def test_windows_are_bounded_the_oldest_closes_early() -> None:
    clock = Clock()
    lim = RepeatLimiter(window_s=60.0, max_windows=4, clock=clock)
    lim.first("n0", "k")
    lim.first("n0", "k")  # one repeat, in the window that will be pushed out
    for i in range(1, 10_000):
        clock.now += 0.001
        assert lim.first(f"n{i}", "k")
        assert len(lim) <= 4
    summaries = lim.closed()
    assert [(r.identity, r.count) for r in summaries] == [("n0", 1)]


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window_s"):
        RepeatLimiter(window_s=0)
    with pytest.raises(ValueError, match="max_windows"):
        RepeatLimiter(max_windows=0)


def test_summary_and_text_name_the_event_and_the_count() -> None:
    rep = Repeat(
        "x", "join:c", 7, 1.25, {"repeat_of": "join", "certificate": "PEM", "cert_sha256": "f"}
    )
    assert rep.summary(60.0) == {
        "repeat_of": "join",
        "cert_sha256": "f",
        "count": 7,
        "seconds": 1.25,
        "window_s": 60.0,
    }
    assert "join repeated 7 more times" in str(rep)


def test_pull_slots_one_pull_per_node_a_few_copies_per_round_and_phase() -> None:
    slots = PullSlots(max_sends=3)
    assert slots.start("w0") and not slots.start("w0") and slots.start("w1")
    slots.end("w0")
    assert slots.start("w0")
    first = [slots.sent("w0", 1, pb.FIT) for _ in range(3)]
    assert first == [True, False, False] and not slots.may_send("w0", 1, pb.FIT)
    assert slots.may_send("w1", 1, pb.FIT) and slots.sent("w1", 1, pb.FIT)
    assert slots.may_send("w0", 1, pb.EVALUATE) and slots.sent("w0", 1, pb.EVALUATE)
    for r in range(2, 100):  # old rounds are forgotten: memory stays bounded
        assert slots.may_send("w0", r, pb.FIT) and slots.sent("w0", r, pb.FIT)
    assert len(slots._served) <= 4


def test_a_node_served_enough_copies_waits_for_the_next_round() -> None:
    async def go() -> list[object]:
        hub = Hub("run")
        out = Outgoing(1, pb.FIT, {}, None)
        await hub.open_round(out, frozenset({"w0"}))
        got = []
        for _ in range(4):
            ins = await hub.next_instruction("w0", 0.05)
            got.append(ins)
            if ins is not None:
                hub.pulls.sent("w0", ins.round, ins.kind)
        return got

    assert asyncio.run(go())[3] is None


def test_hub_records_one_refusal_and_one_summary_and_metrics_count_all() -> None:
    events: list[tuple[str, str, int, dict[str, Any]]] = []
    metrics = CoordinatorMetrics()

    def sink(event: str, node: str, round_: int, details: Any) -> None:
        events.append((event, node, round_, dict(details)))
        metrics.observe(event, node, round_, details)

    async def go() -> None:
        hub = Hub("run", events=sink)
        why = "node 'x' not on the allowlist"
        first = [
            hub.record_once("refuse", "x", 0, "DENIED", code="PERMISSION_DENIED", reason=why)
            for _ in range(1500)
        ]
        assert first.count(True) == 1
        await hub.open_round(Outgoing(1, pb.FIT, {}, None), frozenset({"w0"}))
        hub.flush_repeats()

    asyncio.run(go())
    assert [(e, n, d.get("count")) for e, n, _, d in events] == [
        ("refuse", "x", None),
        ("repeated", "x", 1499),
    ]
    assert events[1][3]["repeat_of"] == "refuse" and events[1][3]["code"] == "PERMISSION_DENIED"
    text = metrics.exposition().decode()
    assert 'murmura_refusals_total{kind="allowlist"} 1500.0' in text


def test_a_closed_window_is_reported_when_the_next_round_opens() -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    clock = Clock()

    async def go() -> None:
        hub = Hub("run", events=lambda e, n, r, d: events.append((e, n, dict(d))))
        hub.repeats = RepeatLimiter(window_s=60.0, clock=clock)
        for _ in range(3):
            hub.record_once("update_duplicate", "w0", 1, "r1", sha256="ab")
        clock.now = 61.0
        await hub.open_round(Outgoing(2, pb.FIT, {}, None), frozenset({"w0"}))

    asyncio.run(go())
    assert [(e, d.get("count")) for e, _, d in events] == [
        ("update_duplicate", None),
        ("repeated", 2),
    ]
