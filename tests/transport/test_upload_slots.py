"""Upload slots: at most ``max_concurrent_uploads`` pushes hold an update buffer at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from murmura.errors import ConfigError
from murmura.transport import codec
from murmura.transport.background import ServerThread
from murmura.transport.grpc_server import NODE_HEADER, SERVICE, ServerOptions
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, result_frames
from murmura.types import Layout

LAYOUT = Layout(("w",), ((4096,),))
CHUNK = 1024  # 16 chunks per update


def _frames(node: str) -> list[bytes]:
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="run-1", round=1, node=node, kind=pb.FIT,
        num_examples=3,
    )  # fmt: skip
    vec = np.full(LAYOUT.size, 0.25, dtype=np.float32)
    return list(result_frames(header, codec.encode_blob(vec, LAYOUT, digest=False), CHUNK))


def _push(target: str, node: str, frames: Iterator[bytes]) -> None:
    with grpc.insecure_channel(target) as ch:
        reply = ch.stream_unary(f"/{SERVICE}/Push")(
            frames, timeout=30, metadata=((NODE_HEADER, node),)
        )
    assert codec.parse(pb.PushReply, reply).accepted


@pytest.mark.network
@pytest.mark.parametrize("slots", [1, 2])
def test_a_push_waits_for_a_free_upload_slot(slots: int) -> None:
    """With one slot, b's push is read only after a's ends; with two, b overtakes a."""
    delivered: list[str] = []
    a_reading, a_go = threading.Event(), threading.Event()

    def sink(node: str, round_: int, res: DecodedResult) -> None:
        delivered.append(node)

    def a_frames() -> Iterator[bytes]:
        frames = _frames("a")
        yield from frames[:3]  # header and two chunks: a holds a slot and a buffer
        a_reading.set()
        a_go.wait(30)
        yield from frames[3:]

    opts = ServerOptions(insecure=True, max_concurrent_uploads=slots, chunk_size=CHUNK)
    with ServerThread(Hub("run-1"), opts) as st:
        out = Outgoing(1, pb.FIT, {}, None, LAYOUT)
        st.call(st.hub.open_round(out, frozenset({"a", "b"}), sink))
        a = threading.Thread(target=_push, args=(st.target, "a", a_frames()))
        a.start()
        assert a_reading.wait(10)
        b = threading.Thread(target=_push, args=(st.target, "b", iter(_frames("b"))))
        b.start()
        b.join(1.5)
        assert delivered == ([] if slots == 1 else ["b"])
        assert b.is_alive() == (slots == 1)
        a_go.set()
        a.join(10)
        b.join(10)
        assert not a.is_alive() and not b.is_alive()
    assert delivered == (["a", "b"] if slots == 1 else ["b", "a"])


def test_upload_slots_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_concurrent_uploads must be >= 1, got 0"):
        ServerOptions(max_concurrent_uploads=0)
