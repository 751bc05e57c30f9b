"""A compressed update in a Push stream: named in the header, checked, decoded, counted."""

from __future__ import annotations

import numpy as np
import pytest

from murmura.compress import frame, framed_size, make_codec, spec
from murmura.errors import ProtocolError
from murmura.transport import codec
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import decode_result, result_frames
from murmura.types import Layout

LAYOUT = Layout(("w", "b"), ((30, 10), (10,)))
TOPK = make_codec("topk", ratio=0.1)


def push_stream(blob: codec.Blob) -> list[bytes]:
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="n", kind=pb.FIT,
        num_examples=5,
    )  # fmt: skip
    return list(result_frames(header, blob, chunk_size=64))


def topk_blob(c: object = TOPK) -> tuple[np.ndarray, bytes]:
    x = np.random.default_rng(0).normal(size=LAYOUT.size).astype(np.float32)
    wire = frame(c, c.encode(x, np.random.default_rng(1)))  # type: ignore[attr-defined]
    return x, wire


def test_the_agreed_codec_decodes_and_counts_the_wire_bytes() -> None:
    x, wire = topk_blob()
    res = decode_result(push_stream(codec.compressed_blob(wire, spec(TOPK), LAYOUT)), uplink=TOPK)
    assert res.wire_bytes == len(wire) == framed_size(TOPK, LAYOUT.size)
    assert res.update is not None
    kept = np.nonzero(res.update)[0]
    assert len(kept) == 31 and np.array_equal(res.update[kept], x[kept])
    dense = decode_result(push_stream(codec.encode_blob(x, LAYOUT, digest=False)))
    assert dense.wire_bytes == 4 * LAYOUT.size


def test_a_codec_the_receiver_did_not_agree_to_is_refused_before_allocation() -> None:
    other = make_codec("topk", ratio=0.2)
    _, wire = topk_blob(other)
    stream = push_stream(codec.compressed_blob(wire, spec(other), LAYOUT))
    with pytest.raises(ProtocolError, match=r"dtype 'topk/2 ratio=0.2': this node agreed to"):
        decode_result(stream, uplink=TOPK)
    with pytest.raises(ProtocolError, match="agreed to '<f4' only"):
        decode_result(stream)  # a float32 receiver never decodes a codec
    x = np.zeros(LAYOUT.size, np.float32)
    with pytest.raises(ProtocolError, match="agreed to 'topk/2 ratio=0.1' only"):
        decode_result(push_stream(codec.encode_blob(x, LAYOUT, digest=False)), uplink=TOPK)


def test_a_header_naming_the_agreed_codec_over_other_bytes_is_refused() -> None:
    _, wire = topk_blob(make_codec("randk", ratio=0.1))
    padded = wire + b"\0" * (framed_size(TOPK, LAYOUT.size) - len(wire))
    stream = push_stream(codec.compressed_blob(padded, spec(TOPK), LAYOUT))
    with pytest.raises(ProtocolError, match="encoded with codec 'randk/1"):
        decode_result(stream, uplink=TOPK)
    short = codec.compressed_blob(wire[:-8], spec(TOPK), LAYOUT)
    with pytest.raises(ProtocolError, match="declared length"):
        decode_result(push_stream(short), uplink=TOPK)
