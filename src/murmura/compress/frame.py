"""The header that names a payload's codec, version and parameters on the wire.

``MZC1 | u8 spec length | spec (ASCII) | payload``. A receiver decodes only with the codec it
agreed to: a header whose spec differs (another codec, version or parameter) is refused
before the payload is read, so a node never decodes something it did not agree to.
"""

from __future__ import annotations

from murmura.compress.base import Codec, spec
from murmura.errors import ProtocolError
from murmura.types import Vector

MAGIC = b"MZC1"


def header(codec: Codec) -> bytes:
    """The header for payloads of ``codec``."""
    text = spec(codec).encode("ascii")
    if len(text) > 255:
        raise ValueError(f"codec spec longer than 255 bytes: {text!r}")
    return MAGIC + bytes([len(text)]) + text


def frame(codec: Codec, payload: bytes) -> bytes:
    """``payload`` with its header."""
    return header(codec) + payload


def framed_size(codec: Codec, size: int) -> int:
    """Bytes of a framed payload of ``size`` values: what a message carries."""
    return len(header(codec)) + codec.encoded_size(size)


def unframe(codec: Codec, blob: bytes, size: int) -> Vector:
    """Check ``blob``'s header names ``codec`` exactly, then decode its payload."""
    want = header(codec)
    if blob[: len(MAGIC)] != MAGIC:
        raise ProtocolError("compressed update without the MZC1 codec header")
    if blob[: len(want)] != want:
        n = blob[len(MAGIC)] if len(blob) > len(MAGIC) else 0
        got = blob[len(MAGIC) + 1 : len(MAGIC) + 1 + n].decode("ascii", "replace")
        raise ProtocolError(
            f"update encoded with codec {got!r}, this node agreed to {spec(codec)!r}"
        )
    return codec.decode(blob[len(want) :], size)
