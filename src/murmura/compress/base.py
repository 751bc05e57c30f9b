"""The ``Codec`` extension point: a flat float32 delta to bytes and back.

A codec's payload is exact in length for a given vector size (``encoded_size``), so a decoder
checks the length against the size it expects (the agreed model layout, never the message)
before it allocates anything. Decoders raise ``ProtocolError`` on any malformed payload.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from murmura.errors import ProtocolError
from murmura.types import Vector


class Codec(Protocol):
    """Turns a flat float32 vector into bytes and back; one object per configured codec."""

    @property
    def name(self) -> str:
        """The registry name, carried in the wire header."""
        ...

    @property
    def version(self) -> int:
        """Bumped whenever the payload layout changes; a decoder refuses any other version."""
        ...

    @property
    def biased(self) -> bool:
        """True when ``decode(encode(x))`` is biased (top-k, random-k, sign): use feedback."""
        ...

    def params(self) -> dict[str, int | float | bool]:
        """The parameters the decoder must agree on (they enter the header's spec)."""
        ...

    def encoded_size(self, size: int) -> int:
        """Exact payload bytes for a vector of ``size`` elements."""
        ...

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """The payload of ``x``; stochastic codecs draw from ``rng``."""
        ...

    def decode(self, payload: bytes, size: int) -> Vector:
        """The vector of ``size`` elements that ``payload`` encodes; ``ProtocolError`` if bad."""
        ...


def spec(codec: Codec) -> str:
    """The canonical name, version and parameters of ``codec``: ``"topk/1 ratio=0.01"``."""
    args = " ".join(f"{k}={v!r}" for k, v in sorted(codec.params().items()))
    return f"{codec.name}/{codec.version}" + (f" {args}" if args else "")


def expect_length(codec: Codec, payload: bytes, size: int) -> None:
    """Refuse a payload whose length is not the exact one for ``size`` elements."""
    if size < 0:
        raise ProtocolError(f"{codec.name}: negative vector size {size}")
    want = codec.encoded_size(size)
    if len(payload) != want:
        raise ProtocolError(
            f"{codec.name}: payload of {len(payload)} bytes, {want} expected for {size} values"
        )


def finite_scales(codec: Codec, values: np.ndarray, what: str, nonnegative: bool = True) -> None:
    """Refuse NaN or infinite (or, when ``nonnegative``, negative) scales in a payload."""
    if not np.all(np.isfinite(values)):
        raise ProtocolError(f"{codec.name}: non-finite {what} in payload")
    if nonnegative and np.any(values < 0):
        raise ProtocolError(f"{codec.name}: negative {what} in payload")


def buckets(size: int, bucket: int) -> int:
    """Number of buckets of ``bucket`` elements (the last may be shorter) in ``size``."""
    return -(-size // bucket)
