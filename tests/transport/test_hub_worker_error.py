"""A result that reports the worker's error: bound like any result, the node's answer at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from murmura.transport import codec
from murmura.transport.hub import Hub, Outgoing, Refused
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, decode_result, result_frames


def _header(node: str, error: str, kind: int = pb.FIT, **binding: object) -> pb.ResultHeader:
    fields: dict[str, object] = {"run_id": "run", "round": 1, "node": node, **binding}
    return pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, kind=kind, error=error,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def _decoded(header: pb.ResultHeader) -> DecodedResult:
    return decode_result(result_frames(header, None))


def _fit(node: str) -> DecodedResult:
    return DecodedResult("run", 1, node, pb.FIT, 4, 0.0, {}, None, b"\x01" * 32)


async def _scenario() -> None:
    events: list[tuple[str, str, dict[str, object]]] = []
    hub = Hub("run", events=lambda e, n, r, d: events.append((e, n, dict(d))))
    sunk: list[str] = []
    targets = frozenset({"a", "b", "c"})
    await hub.open_round(Outgoing(1, pb.FIT, {}, None), targets, lambda n, r, res: sunk.append(n))
    bad = _header("b", "RuntimeError: boom")
    for refused, why in [
        (_header("b", "x", run_id="other"), "is not this run"),
        (_header("b", "x", round=2), "round 2 is not open"),
        (_header("b", "x", kind=pb.EVALUATE), "EVALUATE result, but round 1 now collects FIT"),
        (_header("x", "x"), "certificate says 'b'"),
    ]:
        with pytest.raises(Refused, match=why):
            hub.admit("b", refused)
    with pytest.raises(Refused, match="not sampled"):
        hub.admit("d", _header("d", "x"))

    assert hub.admit("a", _header("a", "")) is False
    await hub.deliver("a", _fit("a"))
    assert hub.admit("b", bad) is False
    await hub.deliver("b", _decoded(bad))
    assert sunk == ["a"]  # an error never reaches the sink
    assert await hub.next_instruction("b", 0) is None  # answered: not sent the round again
    assert hub.admit("b", bad) is True  # a re-sent copy is acknowledged, counted once
    hub.check_duplicate("b", _decoded(bad))
    assert hub.admit("b", _header("b", "OSError: other")) is True
    with pytest.raises(Refused, match="a different result was already counted"):
        hub.check_duplicate("b", _decoded(_header("b", "OSError: other")))

    c = _header("c", "ValueError: no data")
    assert hub.admit("c", c) is False
    await hub.deliver("c", _decoded(c))
    t0 = time.monotonic()
    outcome = await hub.collect(60.0)  # everyone answered: closes without waiting
    assert time.monotonic() - t0 < 1.0
    assert set(outcome.results) == {"a"}
    assert outcome.failures == {
        "b": "worker error: RuntimeError: boom",
        "c": "worker error: ValueError: no data",
    }
    assert hub.counters["worker_errors"] == 2 and hub.counters["duplicates"] == 1
    errors = [(n, d) for e, n, d in events if e == "worker_error"]
    assert errors == [
        ("b", {"blake3": _decoded(bad).digest.hex(), "kind": "FIT", "error": "RuntimeError: boom"}),
        ("c", {"blake3": _decoded(c).digest.hex(), "kind": "FIT", "error": "ValueError: no data"}),
    ]
    with pytest.raises(Refused, match="round 1 is not open"):
        hub.admit("b", bad)  # stale once the round closed


def test_a_worker_error_is_the_nodes_answer_and_the_round_closes_at_once() -> None:
    asyncio.run(_scenario())
