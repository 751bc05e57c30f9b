"""Decoders refuse malformed payloads with ProtocolError: never a crash, never a big buffer."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.compress import frame, make_codec, unframe
from murmura.compress.frame import header
from murmura.errors import ProtocolError

CODECS = [
    make_codec("float16"),
    make_codec("bfloat16"),
    make_codec("quantize", bits=8, bucket=8),
    make_codec("quantize", bits=4, bucket=8),
    make_codec("qsgd", levels=3, bucket=8),
    make_codec("topk", ratio=0.25),
    make_codec("topkq", ratio=0.25, bits=4),
    make_codec("topkq", ratio=0.5, bits=1),
    make_codec("randk", ratio=0.25),
    make_codec("sign", bucket=8),
]
IDS = [c.name + str(i) for i, c in enumerate(CODECS)]
NAN = struct.pack("<f", float("nan"))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@settings(max_examples=60, deadline=None)
@given(blob=st.binary(max_size=200), size=st.integers(0, 64))
def test_random_bytes_decode_or_raise_protocol_error(codec: object, blob: bytes, size: int) -> None:
    for data in (blob, frame(codec, blob)):  # type: ignore[arg-type]
        try:
            y = unframe(codec, data, size)  # type: ignore[arg-type]
        except ProtocolError:
            continue
        assert y.shape == (size,) and np.all(np.isfinite(y))


@pytest.mark.parametrize("codec", CODECS, ids=IDS)
@pytest.mark.parametrize("delta", [-1, 1, 10**9])
def test_wrong_length_is_refused_before_allocation(codec: object, delta: int) -> None:
    good = codec.encode(np.ones(32, np.float32), np.random.default_rng())  # type: ignore[attr-defined]
    bad = good[:delta] if delta < 0 else good + b"\0" * min(delta, 64)
    with pytest.raises(ProtocolError, match="expected for 32 values"):
        codec.decode(bad, 32)  # type: ignore[attr-defined]


def test_a_huge_claimed_size_does_not_allocate() -> None:
    """The size comes from the agreed layout; a short payload for it is refused at once."""
    with pytest.raises(ProtocolError, match="payload of 8 bytes"):
        make_codec("topk", ratio=0.5).decode(b"\0" * 8, 2**40)


def test_topk_indices_out_of_range_or_repeated_are_refused() -> None:
    codec = make_codec("topk", ratio=0.25)  # k = 2 of 8
    values = struct.pack("<2f", 1.0, 2.0)
    for idx in [(1, 8), (3, 3), (5, 2), (0, 2**16 - 1)]:
        with pytest.raises(ProtocolError, match="indices not increasing"):
            codec.decode(struct.pack("<2H", *idx) + values, 8)  # uint16 indices: d <= 65536


def test_topkq_indices_out_of_range_repeated_or_padded_are_refused() -> None:
    codec = make_codec("topkq", ratio=0.25, bits=8)  # k = 2 of 8: 3-bit indices, 8-bit levels
    scale, levels = struct.pack("<f", 1.0), b"\x00\xff"
    for a, b in [(1, 0), (3, 3), (7, 2)]:  # 6 bits of one byte: not increasing
        with pytest.raises(ProtocolError, match="indices not increasing"):
            codec.decode(scale + bytes([a | b << 3]) + levels, 8)
    with pytest.raises(ProtocolError, match="padding"):
        codec.decode(scale + bytes([1 | 2 << 3 | 1 << 7]) + levels, 8)
    wide = make_codec("topkq", ratio=0.25, bits=8)  # k = 3 of 12: 4-bit indices can say 15
    with pytest.raises(ProtocolError, match="indices not increasing within 0..11"):
        wide.decode(scale + bytes([0x21, 0x0F]) + b"\0\0\0", 12)
    coarse = make_codec("topkq", ratio=0.375, bits=2)  # k = 3 levels of 2 bits in one byte
    indices = bytes([0x99, 0x01])  # 1, 3 and 6 at 3 bits each
    with pytest.raises(ProtocolError, match="padding bits after the levels"):
        coarse.decode(scale + indices + b"\xc0", 8)
    assert np.array_equal(  # the same bytes with clean padding decode
        coarse.decode(scale + indices + b"\x00", 8), [0, -1, 0, -1, 0, 0, -1, 0]
    )


@pytest.mark.parametrize(
    ("name", "params", "payload"),
    [
        ("sign", {"bucket": 8}, NAN + b"\xff"),
        ("sign", {"bucket": 8}, struct.pack("<f", -1.0) + b"\xff"),
        ("qsgd", {"levels": 1, "bucket": 8}, NAN + b"\0\0"),
        ("quantize", {"bits": 8, "bucket": 8}, NAN + struct.pack("<f", 1.0) + b"\0" * 8),
        ("quantize", {"bits": 8, "bucket": 8}, struct.pack("<f", 0.0) + NAN + b"\0" * 8),
        ("quantize", {"bits": 8, "bucket": 8}, struct.pack("<2f", 0.0, 3e38) + b"\xff" * 8),
        ("float16", {}, b"\0\x7e" + b"\0" * 14),
        ("bfloat16", {}, b"\x80\x7f" + b"\0" * 14),
        ("topk", {"ratio": 0.125}, struct.pack("<H", 0) + NAN),
        ("randk", {"ratio": 0.125}, b"\0" * 8 + NAN),
        ("topkq", {"ratio": 0.125, "bits": 8}, NAN + b"\0\0"),
        ("topkq", {"ratio": 0.125, "bits": 8}, struct.pack("<f", -1.0) + b"\0\0"),
    ],
)
def test_non_finite_scales_and_values_are_refused(
    name: str, params: dict[str, int], payload: bytes
) -> None:
    with pytest.raises(ProtocolError, match="non-finite|negative"):
        make_codec(name, **params).decode(payload, 8)


def test_qsgd_level_above_its_range_is_refused() -> None:
    codec = make_codec("qsgd", levels=1, bucket=8)  # 2 bits, values 0..2
    with pytest.raises(ProtocolError, match="level 3 above"):
        codec.decode(struct.pack("<f", 1.0) + b"\xff\x00", 8)


def test_a_header_of_another_codec_or_parameter_is_refused() -> None:
    agreed = make_codec("topk", ratio=0.25)
    x = np.ones(8, np.float32)
    rng = np.random.default_rng()
    for other in (make_codec("topk", ratio=0.5), make_codec("randk", ratio=0.25)):
        blob = frame(other, other.encode(x, rng))
        with pytest.raises(ProtocolError, match=r"encoded with codec '.*', this node agreed"):
            unframe(agreed, blob, 8)
    with pytest.raises(ProtocolError, match="without the MZC1 codec header"):
        unframe(agreed, x.tobytes(), 8)
    assert header(agreed) == b"MZC1\x11topk/2 ratio=0.25"
