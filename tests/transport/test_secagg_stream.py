"""The SendStream decoder: secure aggregation answers in chunks, checked before and after use.

A declared length over the limit is refused before anything is allocated; chunks must be
contiguous and within the length; a truncated stream, an extra chunk or a wrong digest is a
typed ``ProtocolError``, and nothing else ever escapes the decoder.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ProtocolError
from murmura.transport import codec
from murmura.transport.codec import (
    BufferAssembler,
    DigestMismatch,
    LengthMismatch,
    MalformedMessage,
    SizeLimitExceeded,
    UnknownKind,
    UnsupportedVersion,
)
from murmura.transport.frames import chunk_frame
from murmura.transport.proto import secagg_pb2 as spb
from murmura.transport.secagg_stream import (
    SendStreamReader,
    decode_send_stream,
    send_frames,
    stream_header,
)

PAYLOAD = bytes(range(256)) * 40  # 10 240 B
LIMIT = 1 << 20


def _frames(payload: bytes = PAYLOAD, chunk: int = 1000, **fields: object) -> list[bytes]:
    """A sender's stream of ``payload``; ``fields`` then overwrite its header's claims."""
    header = stream_header("run-1", 3, "w1", spb.SECAGG_MASKED_INPUT, payload)
    frames = list(send_frames(header, payload, chunk))
    for key, value in fields.items():
        setattr(header, key, value)
    frames[0] = spb.SecAggSendPart(header=header).SerializeToString()
    return frames


def test_a_stream_round_trips_with_its_binding_and_digest() -> None:
    got = decode_send_stream(_frames(), LIMIT)
    assert got.payload == PAYLOAD and got.digest == hashlib.sha256(PAYLOAD).digest()
    assert (got.run_id, got.round, got.node, got.step) == ("run-1", 3, "w1", 4)


def test_a_declared_length_over_the_limit_is_refused_before_allocating() -> None:
    frames = _frames(length=1 << 60)  # an exabyte: allocating it would fail loudly
    with pytest.raises(SizeLimitExceeded, match="exceeds the limit"):
        decode_send_stream(frames, LIMIT)
    with pytest.raises(SizeLimitExceeded):
        decode_send_stream(_frames(), len(PAYLOAD) - 1)
    assert decode_send_stream(_frames(), len(PAYLOAD)).payload == PAYLOAD


@pytest.mark.parametrize(
    ("mangle", "error", "match"),
    [
        (lambda f: f[:-1], LengthMismatch, "stream ended after 10000 of 10240"),  # truncated
        (lambda f: [f[0], *f[2:]], MalformedMessage, "offset 1000, expected 0"),  # a gap
        (lambda f: [*f[:3], f[2], *f[3:]], MalformedMessage, "expected 2000"),  # overlap
        (lambda f: [*f, chunk_frame(10240, b"x")], LengthMismatch, "beyond the declared"),
        (lambda f: [f[0], f[0], *f[1:]], MalformedMessage, "only chunks"),  # a second header
        (lambda f: f[1:], MalformedMessage, "must start with a header"),
        (lambda f: [f[0], b"\xff\x00garbage"], MalformedMessage, "cannot decode"),
        (lambda f: [f[0], chunk_frame(0, b"")], MalformedMessage, "empty chunk"),
        (lambda f: [], MalformedMessage, "empty secagg send stream"),
    ],
)
def test_bad_chunk_streams_are_typed_errors(mangle, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        decode_send_stream(mangle(_frames()), LIMIT)


def test_a_wrong_digest_or_a_changed_byte_is_a_digest_mismatch() -> None:
    with pytest.raises(DigestMismatch):
        decode_send_stream(_frames(sha256=b"\0" * 32), LIMIT)
    frames = _frames()
    frames[4] = chunk_frame(3000, b"\1" + PAYLOAD[3001:4000])
    with pytest.raises(DigestMismatch):
        decode_send_stream(frames, LIMIT)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"version": codec.PROTOCOL_VERSION + 1}, UnsupportedVersion),
        ({"step": 0}, UnknownKind),
        ({"step": 99}, UnknownKind),
        ({"length": 0}, MalformedMessage),
        ({"sha256": b"\0" * 31}, MalformedMessage),
    ],
)
def test_bad_headers_are_refused_before_allocating(fields: dict[str, object], error: type) -> None:
    reader = SendStreamReader()
    with pytest.raises(error):
        reader.read_header(_frames(**fields)[0])
    with pytest.raises(MalformedMessage, match="no header yet"):
        reader.start(LIMIT)


def test_chunks_are_refused_until_the_caller_started_the_stream() -> None:
    frames = _frames()
    reader = SendStreamReader()
    reader.read_header(frames[0])
    with pytest.raises(MalformedMessage, match="before the stream was started"):
        reader.read_chunk(frames[1])


def test_the_sender_refuses_a_header_that_does_not_match_its_payload() -> None:
    header = stream_header("run-1", 3, "w1", spb.SECAGG_MASKED_INPUT, PAYLOAD)
    with pytest.raises(ValueError, match="announces"):
        list(send_frames(header, PAYLOAD[:-1]))


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(min_size=1, max_size=3000), chunk=st.integers(1, 700))
def test_any_payload_in_any_chunk_size_round_trips(payload: bytes, chunk: int) -> None:
    frames = _frames(payload, chunk)
    assert len(frames) == 1 + -(-len(payload) // chunk)
    assert decode_send_stream(frames, len(payload)).payload == payload


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=2000),
    chunk=st.integers(1, 500),
    data=st.data(),
)
def test_a_mangled_stream_is_a_protocol_error_or_the_exact_payload(
    payload: bytes, chunk: int, data: st.DataObject
) -> None:
    frames = _frames(payload, chunk)
    body = frames[1:]
    how = data.draw(st.sampled_from(["drop", "swap", "flip", "cut", "junk"]))
    i = data.draw(st.integers(0, len(body) - 1))
    if how == "drop":
        del body[i]
    elif how == "swap":
        j = data.draw(st.integers(0, len(body) - 1))
        body[i], body[j] = body[j], body[i]
    elif how == "flip":
        raw = bytearray(body[i])
        k = data.draw(st.integers(0, len(raw) - 1))
        raw[k] ^= data.draw(st.integers(1, 255))
        body[i] = bytes(raw)
    elif how == "cut":
        body[i] = body[i][: data.draw(st.integers(0, len(body[i]) - 1))]
    else:
        body.insert(i, data.draw(st.binary(max_size=40)))
    try:
        got = decode_send_stream([frames[0], *body], LIMIT)
    except ProtocolError:
        return
    assert got.payload == payload  # only a no-op mangling (a swap with itself) gets through


@settings(max_examples=100, deadline=None)
@given(
    length=st.integers(1, 4000),
    cuts=st.lists(st.integers(1, 4000), max_size=12),
    data=st.data(),
)
def test_the_buffer_takes_contiguous_chunks_only(
    length: int, cuts: list[int], data: st.DataObject
) -> None:
    raw = data.draw(st.binary(min_size=length, max_size=length))
    bounds = sorted({0, length, *(c for c in cuts if c < length)})
    buf = BufferAssembler(length, length)
    for a, b in zip(bounds, bounds[1:], strict=False):
        with pytest.raises(MalformedMessage):
            buf.add_bytes(a + 1, raw[a:b])  # one byte off: a gap
        if a > 0:
            with pytest.raises(MalformedMessage):
                buf.add_bytes(a - 1, raw[a - 1 : b])  # an overlap
        buf.add_bytes(a, raw[a:b])
    assert bytes(buf.finish(hashlib.sha256(raw).digest())) == raw
