"""The async hub: one open dispatch per worker, each bound to its own ticket."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from murmura.transport import codec
from murmura.transport.async_hub import AsyncHub, Settled
from murmura.transport.hub import Outgoing, Refused
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import Layout

LAYOUT = Layout(("a",), ((3,),))


def _header(node: str, ticket: int) -> pb.ResultHeader:
    return pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run", round=ticket, node=node, kind=pb.FIT
    )


def _result(node: str, ticket: int, digest: bytes = b"\x01" * 32) -> DecodedResult:
    update = np.ones(3, dtype=np.float32)
    return DecodedResult("run", ticket, node, pb.FIT, 4, 0.0, {}, update, digest)


async def _scenario() -> None:
    hub = AsyncHub("run", LAYOUT, heartbeat_s=0.1, lost_after_s=0.3)
    sunk: list[tuple[str, int]] = []
    for node in ("a", "b", "c"):
        hub.touch(node)

    def sink(node: str, ticket: int, res: DecodedResult) -> None:
        sunk.append((node, ticket))

    blob = codec.encode_blob(np.zeros(3, dtype=np.float32), LAYOUT)
    await hub.dispatch(Outgoing(7, pb.FIT, {}, blob, LAYOUT), "a", sink, 60.0)
    await hub.dispatch(Outgoing(8, pb.FIT, {}, blob, LAYOUT), "b", sink, 60.0)
    await hub.dispatch(Outgoing(9, pb.FIT, {}, blob, LAYOUT), "c", sink, 0.0)
    assert hub.busy() == {"a", "b", "c"} and hub.expected_layout() == LAYOUT
    out_a = await hub.next_instruction("a", 0.0)
    assert out_a is not None and out_a.round == 7  # each worker gets its own ticket
    with pytest.raises(Refused, match="node not sampled in round 8"):
        hub.admit("a", _header("a", 8))  # another worker's ticket
    assert hub.admit("a", _header("a", 7)) is False
    await hub.deliver("a", _result("a", 7))
    assert sunk == [("a", 7)]

    settled = await hub.settle(0.0)  # a answered, c's deadline (0 s) passed
    assert sorted(settled, key=lambda s: s.ticket) == [
        Settled("a", 7, None),
        Settled("c", 9, "no result before the round deadline"),
    ]
    with pytest.raises(Refused, match="round 7 is not open"):  # settled: a copy is not counted
        hub.admit("a", _header("a", 7))
    assert await hub.next_instruction("a", 0.0) is None  # idle until it gets a new dispatch

    await asyncio.sleep(0.4)  # b is silent past lost_after
    hub.touch("a")
    assert await hub.settle(0.0) == [Settled("b", 8, "lost: no heartbeat for more than 0.3 s")]
    assert hub.dispatches == {} and sunk == [("a", 7)]


def test_dispatches_are_bound_settled_and_closed() -> None:
    asyncio.run(_scenario())
