"""Fast path for chunk messages: ``ResultPart``/``Instruction`` holding only a ``Chunk``.

Both messages put the chunk in field 2, so one wire form serves both directions (and the
streams of ``peer.proto`` and ``secagg.proto``, ``ModelPart`` and ``SecAggSendPart``). Encoding
writes the canonical protobuf bytes with one copy of the payload; parsing accepts only that
canonical form and returns a zero-copy view of the payload. Anything else returns None and the
caller falls back to the protobuf parser, so the fast path never accepts what protobuf would
refuse, nor reads a message differently.
"""

from __future__ import annotations

_CHUNK_FIELD = 0x12  # field 2, length-delimited (the oneof's chunk)
_OFFSET_FIELD = 0x08  # Chunk.offset: field 1, varint
_DATA_FIELD = 0x12  # Chunk.data: field 2, length-delimited


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(buf: memoryview, i: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while i < len(buf) and shift < 64:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
    return None


def chunk_frame(offset: int, data: memoryview | bytes) -> bytes:
    """Serialized ``{ResultPart,Instruction}(chunk=Chunk(offset, data))``, canonical form."""
    inner = (bytes((_OFFSET_FIELD,)) + varint(offset) if offset else b"") + bytes((_DATA_FIELD,))
    inner += varint(len(data))
    return b"".join((bytes((_CHUNK_FIELD,)), varint(len(inner) + len(data)), inner, data))


def parse_chunk_frame(raw: bytes | memoryview) -> tuple[int, memoryview] | None:
    """``(offset, payload view)`` if ``raw`` is a canonical chunk frame with data, else None."""
    buf = memoryview(raw)
    if len(buf) < 3 or buf[0] != _CHUNK_FIELD:
        return None
    head = _read_varint(buf, 1)
    if head is None or head[0] != len(buf) - head[1]:
        return None
    i, offset = head[1], 0
    if buf[i] == _OFFSET_FIELD:
        got = _read_varint(buf, i + 1)
        if got is None or got[0] == 0:  # canonical form omits a zero offset
            return None
        offset, i = got
    if i >= len(buf) or buf[i] != _DATA_FIELD:
        return None
    got = _read_varint(buf, i + 1)
    if got is None or got[0] == 0 or got[0] != len(buf) - got[1]:
        return None
    return offset, buf[got[1] :]
