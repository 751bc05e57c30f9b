"""A round's EVALUATE phase on the hub: never confused with its FIT phase, replays refused."""

from __future__ import annotations

import asyncio

import pytest

from murmura.transport import codec
from murmura.transport.hub import Hub, Outgoing, Refused
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, decode_result, result_frames


def _header(node: str, kind: int, loss: float = 0.5, n: int = 4) -> pb.ResultHeader:
    return pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run", round=1, node=node, kind=kind,
        num_examples=n, loss=loss, metrics={"accuracy": 0.75},
    )  # fmt: skip


def _evaluation(node: str, loss: float = 0.5) -> DecodedResult:
    return decode_result(result_frames(_header(node, pb.EVALUATE, loss), None))


def _fit(node: str) -> DecodedResult:
    return DecodedResult("run", 1, node, pb.FIT, 4, 0.0, {}, None, b"\x01" * 32)


async def _scenario() -> None:
    hub = Hub("run")
    fits: list[str] = []
    evals: list[tuple[str, float]] = []
    targets = frozenset({"a", "b"})
    await hub.open_round(Outgoing(1, pb.FIT, {}, None), targets, lambda n, r, res: fits.append(n))
    with pytest.raises(Refused, match="EVALUATE result, but round 1 now collects FIT"):
        hub.admit("a", _header("a", pb.EVALUATE))
    assert hub.admit("a", _header("a", pb.FIT)) is False
    assert hub.admit("b", _header("b", pb.FIT)) is False  # b's upload outlives the FIT phase
    await hub.deliver("a", _fit("a"))
    outcome = await hub.collect(0)
    assert fits == ["a"] and set(outcome.results) == {"a"} and "b" in outcome.failures

    def sink(node: str, r: int, res: DecodedResult) -> None:
        evals.append((node, res.loss))

    await hub.open_round(Outgoing(1, pb.EVALUATE, {}, None), targets, sink)
    pending = await hub.next_instruction("a", 0)
    assert pending is not None and pending.kind == pb.EVALUATE
    with pytest.raises(Refused, match="closed during upload"):
        await hub.deliver("b", _fit("b"))  # same round number, but not a FIT phase any more
    with pytest.raises(Refused, match="FIT result, but round 1 now collects EVALUATE"):
        hub.admit("a", _header("a", pb.FIT))  # a re-sent FIT result of round 1
    assert hub.admit("a", _header("a", pb.EVALUATE)) is False
    await hub.deliver("a", _evaluation("a"))
    assert fits == ["a"] and evals == [("a", 0.5)]
    assert hub.admit("a", _header("a", pb.EVALUATE)) is True  # a second copy: counted once
    hub.check_duplicate("a", _evaluation("a"))
    with pytest.raises(Refused, match="a different result was already counted"):
        hub.check_duplicate("a", _evaluation("a", loss=0.1))
    assert evals == [("a", 0.5)]
    await hub.collect(0)
    with pytest.raises(Refused, match="round 1 is not open"):
        hub.admit("b", _header("b", pb.EVALUATE))  # stale once the phase closed


def test_evaluate_and_fit_results_of_one_round_are_never_confused() -> None:
    asyncio.run(_scenario())
