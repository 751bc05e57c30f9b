"""Codec and stream decoder: round trips, every refusal, and a hypothesis fuzz (evidence 7)."""

from __future__ import annotations

import tracemalloc

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from murmura.errors import ProtocolError
from murmura.transport import codec, streams
from murmura.transport.codec import (
    DigestMismatch,
    LayoutMismatch,
    LengthMismatch,
    MalformedMessage,
    SizeLimitExceeded,
    UnknownKind,
    UnsupportedVersion,
)
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Layout

LAYOUT = Layout(("w", "b"), ((3, 4), (4,)))


def _b3(data: bytes) -> bytes:
    return blake3.blake3(data).digest()


def _vector(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(LAYOUT.size).astype(np.float32)


def _result_parts(vec: np.ndarray, chunk: int = 16, **fields: object) -> list[bytes]:
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="a", kind=pb.FIT, num_examples=5
    )
    for k, v in fields.items():
        setattr(header, k, v)
    blob = codec.encode_blob(vec, LAYOUT)
    return [p.SerializeToString() for p in streams.result_parts(header, blob, chunk)]


def test_round_trip_is_bitwise() -> None:
    vec = _vector()
    res = streams.decode_result(_result_parts(vec), expected=LAYOUT)
    assert res.update is not None
    assert res.update.tobytes() == vec.tobytes()
    assert (res.round, res.node, res.num_examples) == (1, "a", 5)
    assert res.digest == _b3(vec.astype("<f4").tobytes())


def test_instruction_round_trip() -> None:
    vec = _vector(1)
    header = pb.InstructionHeader(
        version=codec.PROTOCOL_VERSION, run_id="r", round=2, node="a", kind=pb.FIT
    )
    for k, v in codec.config_to_proto({"lr": 0.1, "epochs": 2, "opt": "sgd", "x": True}).items():
        header.config[k].CopyFrom(v)
    parts = list(streams.instruction_parts(header, codec.encode_blob(vec, LAYOUT), 7))
    ins = streams.decode_instruction([p.SerializeToString() for p in parts])
    assert ins.weights is not None and ins.weights.tobytes() == vec.tobytes()
    assert ins.layout == LAYOUT
    assert ins.config == {"lr": 0.1, "epochs": 2, "opt": "sgd", "x": True}


def test_default_chunks_are_one_mib() -> None:
    layout = Layout(("w",), ((600_000,),))
    blob = codec.encode_blob(np.zeros(600_000, np.float32), layout)
    sizes = [len(c.data) for c in blob.chunks()]
    assert sizes == [1 << 20, 1 << 20, 2_400_000 - (2 << 20)]


def _header_bytes(**blob: object) -> bytes:
    h = pb.ResultHeader(version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="a", kind=pb.FIT)
    h.update.CopyFrom(pb.BlobHeader(dtype="<f4", length=64, layout=codec.layout_to_proto(LAYOUT)))
    h.update.digest_algorithm = "blake3"
    for k, v in blob.items():
        setattr(h.update, k, v)
    return pb.ResultPart(header=h).SerializeToString()


@pytest.mark.parametrize(
    ("parts", "error"),
    [
        ([b"\xff\xff\xff"], MalformedMessage),
        ([], MalformedMessage),
        ([pb.ResultPart(chunk=pb.Chunk(data=b"x")).SerializeToString()], MalformedMessage),
        (
            [pb.ResultPart(header=pb.ResultHeader(version=9, kind=1)).SerializeToString()],
            UnsupportedVersion,
        ),
        (
            [
                pb.ResultPart(
                    header=pb.ResultHeader(version=codec.PROTOCOL_VERSION, kind=77)
                ).SerializeToString()
            ],
            UnknownKind,
        ),
        ([_header_bytes(length=68)], LengthMismatch),
        ([_header_bytes(dtype="<f8")], MalformedMessage),
        ([_header_bytes(length=1 << 40)], SizeLimitExceeded),
        ([_header_bytes(sha256=b"\0" * 32)], MalformedMessage),  # v2: the digest is a trailer
    ],
)
def test_bad_streams_raise_typed_errors(parts: list[bytes], error: type[ProtocolError]) -> None:
    with pytest.raises(error):
        streams.decode_result(parts)


def _trailer(digest: bytes) -> bytes:
    return pb.ResultPart(trailer=pb.BlobTrailer(digest=digest)).SerializeToString()


def test_truncated_stream_and_flipped_bit() -> None:
    parts = _result_parts(_vector())
    with pytest.raises(LengthMismatch):  # the last chunk missing, the trailer there
        streams.decode_result([*parts[:-2], parts[-1]])
    chunk = pb.ResultPart.FromString(parts[1])
    chunk.chunk.data = bytes([chunk.chunk.data[0] ^ 1]) + chunk.chunk.data[1:]
    with pytest.raises(DigestMismatch):
        streams.decode_result([parts[0], chunk.SerializeToString(), *parts[2:]])
    with pytest.raises(MalformedMessage):  # out of order
        streams.decode_result([parts[0], parts[2], parts[1], *parts[3:]])
    extra = pb.ResultPart(chunk=pb.Chunk(offset=64, data=b"x")).SerializeToString()
    with pytest.raises(LengthMismatch):  # one chunk too many
        streams.decode_result([*parts[:-1], extra, parts[-1]])


def test_digest_trailer_is_required_last_and_checked() -> None:
    vec = _vector()
    parts = _result_parts(vec)
    digest = _b3(vec.tobytes())
    assert parts[-1] == _trailer(digest)
    with pytest.raises(MalformedMessage):  # no trailer
        streams.decode_result(parts[:-1])
    with pytest.raises(MalformedMessage):  # something after the trailer
        streams.decode_result([*parts, parts[-1]])
    with pytest.raises(MalformedMessage):  # a digest of the wrong size
        streams.decode_result([*parts[:-1], _trailer(digest[:31])])
    with pytest.raises(DigestMismatch):
        streams.decode_result([*parts[:-1], _trailer(bytes(32))])
    evaluate = pb.ResultHeader(version=codec.PROTOCOL_VERSION, kind=pb.EVALUATE)
    with pytest.raises(MalformedMessage):  # a trailer for a result without an update
        streams.decode_result([pb.ResultPart(header=evaluate).SerializeToString(), parts[-1]])


def test_client_frames_equal_protobuf_parts() -> None:
    vec = _vector(2)
    blob = codec.encode_blob(vec, LAYOUT, digest=False)

    def header() -> pb.ResultHeader:
        return pb.ResultHeader(version=codec.PROTOCOL_VERSION, run_id="r", kind=pb.FIT)

    frames = list(streams.result_frames(header(), blob, 20))
    parts = [p.SerializeToString() for p in streams.result_parts(header(), blob, 20)]
    assert frames == parts


def test_wrong_layout_and_size_limit() -> None:
    parts = _result_parts(_vector())
    with pytest.raises(LayoutMismatch):
        streams.decode_result(parts, expected=Layout(("w",), ((16,),)))
    with pytest.raises(SizeLimitExceeded):
        streams.decode_result(parts, max_bytes=63)
    assert streams.decode_result(parts, max_bytes=64).update is not None


def test_length_bomb_is_refused_before_allocation() -> None:
    huge = Layout(("w",), ((1 << 34,),))
    h = pb.ResultHeader(version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="a", kind=pb.FIT)
    h.update.CopyFrom(
        pb.BlobHeader(
            dtype="<f4",
            length=1 << 36,
            layout=codec.layout_to_proto(huge),
            digest_algorithm="blake3",
        )
    )
    raw = pb.ResultPart(header=h).SerializeToString()
    tracemalloc.start()
    with pytest.raises(SizeLimitExceeded):
        streams.decode_result([raw], max_bytes=(1 << 36) - 1)
    with pytest.raises(LengthMismatch):  # under the limit but disagreeing with the layout
        h.update.length = 1 << 20
        streams.decode_result([pb.ResultPart(header=h).SerializeToString()], max_bytes=1 << 40)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20


def test_the_trailer_carries_the_signature_and_refuses_an_oversized_one() -> None:
    vec = _vector()
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="a", kind=pb.FIT, num_examples=5
    )
    blob = codec.encode_blob(vec, LAYOUT, digest=False)
    seen: list[bytes] = []

    def sign(digest: bytes) -> bytes:
        seen.append(digest)
        return b"sig:" + digest[:4]

    frames = list(streams.result_frames(header, blob, 16, sign))
    digest = _b3(vec.tobytes())
    assert seen == [digest]
    assert frames == [p.SerializeToString() for p in streams.result_parts(header, blob, 16, sign)]
    res = streams.decode_result(frames, expected=LAYOUT)
    assert res.signature == b"sig:" + digest[:4] and res.digest == digest
    assert streams.decode_result(_result_parts(vec)).signature == b""  # unsigned: empty
    big = pb.ResultPart(trailer=pb.BlobTrailer(digest=digest, signature=bytes(257)))
    with pytest.raises(MalformedMessage, match="limit 256"):
        streams.decode_result([*frames[:-1], big.SerializeToString()])


VALID = _result_parts(_vector(3), chunk=20)
_TRAILER = pb.ResultPart.FromString(VALID[-1])
_TRAILER.trailer.signature = bytes(range(70))  # the fuzz mutates a signed trailer too
VALID[-1] = _TRAILER.SerializeToString()


@st.composite
def mutated(draw: st.DrawFn) -> list[bytes]:
    parts = list(VALID)
    i = draw(st.integers(0, len(parts) - 1))
    data = bytearray(parts[i])
    op = draw(st.sampled_from(["flip", "truncate", "insert", "drop", "swap", "dup"]))
    if op == "flip" and data:
        j = draw(st.integers(0, len(data) - 1))
        data[j] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        data = data[: draw(st.integers(0, len(data)))]
    elif op == "insert":
        j = draw(st.integers(0, len(data)))
        data[j:j] = draw(st.binary(min_size=1, max_size=8))
    elif op == "drop":
        del parts[i]
        return parts
    elif op == "swap":
        j = draw(st.integers(0, len(parts) - 1))
        parts[i], parts[j] = parts[j], parts[i]
        return parts
    elif op == "dup":
        parts.insert(i, parts[i])
        return parts
    parts[i] = bytes(data)
    return parts


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_fuzz_random_bytes_raise_only_protocol_errors(parts: list[bytes]) -> None:
    for decode in (streams.decode_result, streams.decode_instruction):
        try:
            decode(parts, max_bytes=1 << 16)  # type: ignore[operator]
        except ProtocolError:
            pass


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_fuzz_mutated_streams_raise_only_protocol_errors(parts: list[bytes]) -> None:
    try:
        res = streams.decode_result(parts, max_bytes=1 << 16, expected=LAYOUT)
    except ProtocolError:
        return
    # Whatever got through must be exactly what the digest vouches for.
    assert res.update is not None
    assert _b3(res.update.tobytes()) == res.digest
    assert len(res.signature) <= 256


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**40), st.binary(min_size=1, max_size=300))
def test_chunk_frames_are_canonical_protobuf(offset: int, data: bytes) -> None:
    from murmura.transport.frames import chunk_frame, parse_chunk_frame

    frame = chunk_frame(offset, data)
    for cls in (pb.ResultPart, pb.Instruction):
        assert frame == cls(chunk=pb.Chunk(offset=offset, data=data)).SerializeToString()
    got = parse_chunk_frame(frame)
    assert got is not None and got[0] == offset and bytes(got[1]) == data


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_chunk_fast_path_never_disagrees_with_protobuf(raw: bytes) -> None:
    from murmura.transport.frames import parse_chunk_frame

    fast = parse_chunk_frame(raw)
    if fast is None:
        return
    msg = pb.ResultPart.FromString(raw)  # must parse, to the same chunk
    assert msg.WhichOneof("part") == "chunk"
    assert (msg.chunk.offset, msg.chunk.data) == (fast[0], bytes(fast[1]))


def _error_parts(error: str, kind: int = pb.FIT, vec: np.ndarray | None = None,
                 **fields: object) -> list[bytes]:  # fmt: skip
    header = pb.ResultHeader(
        version=codec.PROTOCOL_VERSION, run_id="r", round=1, node="a", kind=kind, error=error,
        **fields,  # type: ignore[arg-type]
    )  # fmt: skip
    blob = codec.encode_blob(vec, LAYOUT) if vec is not None else None
    return [p.SerializeToString() for p in streams.result_parts(header, blob, 16)]


@pytest.mark.parametrize("kind", [pb.FIT, pb.EVALUATE])
def test_an_error_result_is_its_header_alone(kind: int) -> None:
    parts = _error_parts("RuntimeError: out of memory", kind)
    assert len(parts) == 1
    res = streams.decode_result(parts, expected=LAYOUT)
    assert res.error == "RuntimeError: out of memory" and res.kind == kind
    assert res.update is None and res.num_examples == 0 and res.metrics == {}
    header = pb.ResultPart.FromString(parts[0]).header
    assert res.digest == _b3(header.SerializeToString(deterministic=True))
    assert streams.decode_result(_error_parts("x" * streams.MAX_ERROR_CHARS, kind)).error


@pytest.mark.parametrize(
    "parts",
    [
        _error_parts("boom", vec=_vector()),  # an error with an update, its chunks and trailer
        _error_parts("boom", vec=_vector())[:1],  # an error that announces an update
        _error_parts("x" * (streams.MAX_ERROR_CHARS + 1)),
        _error_parts("boom", num_examples=3),
        _error_parts("boom", pb.EVALUATE, loss=0.5),
        _error_parts("boom", pb.EVALUATE, metrics={"accuracy": 1.0}),
        [*_error_parts("boom"), _trailer(bytes(32))],  # a trailer after an error
        [*_error_parts("boom"), pb.ResultPart(chunk=pb.Chunk(data=b"x")).SerializeToString()],
    ],
)
def test_an_error_result_with_anything_else_is_refused(parts: list[bytes]) -> None:
    with pytest.raises(MalformedMessage):
        streams.decode_result(parts, expected=LAYOUT)


def test_error_text_is_one_bounded_line_without_traceback() -> None:
    def boom() -> None:
        raise ValueError("line one\nline two\t" + "y" * 1000)

    try:
        boom()
    except ValueError as exc:
        text = streams.error_text(exc)
    assert text.startswith("ValueError: line one line two ") and text.endswith("...")
    assert len(text) == streams.MAX_ERROR_CHARS and "Traceback" not in text and ".py" not in text
    assert streams.error_text(KeyError()) == "KeyError"


@settings(max_examples=300, deadline=None)
@given(
    error=st.text(max_size=600),
    kind=st.sampled_from([pb.FIT, pb.EVALUATE]),
    update=st.booleans(),
    n=st.integers(0, 3),
    loss=st.sampled_from([0.0, 0.5]),
    metrics=st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False), max_size=2),
)
def test_fuzz_result_headers_with_and_without_error(  # type: ignore[no-untyped-def]
    error, kind, update, n, loss, metrics
) -> None:
    vec = _vector() if update else None
    fields = {"num_examples": n, "loss": loss, "metrics": metrics}
    parts = _error_parts(error, kind, vec, **fields)
    try:
        res = streams.decode_result(parts, expected=LAYOUT)
    except MalformedMessage:
        if error:
            assert len(error) > streams.MAX_ERROR_CHARS or update or n or loss or metrics
        else:
            assert update != (kind == pb.FIT)
        return
    assert res.error == error
    if error:  # an accepted error result has nothing else
        assert res.update is None and (res.num_examples, res.loss, res.metrics) == (0, 0.0, {})
    else:
        assert (res.update is not None) == (kind == pb.FIT) == update
