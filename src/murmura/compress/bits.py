"""Packing small unsigned integers (1, 2, 4 or 8 bits each) into bytes, little-endian."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

WIDTHS = (1, 2, 4, 8)


def width_for(largest: int) -> int:
    """The smallest packable bit width that holds values ``0..largest``."""
    for bits in WIDTHS:
        if largest < 1 << bits:
            return bits
    raise ValueError(f"{largest} does not fit in 8 bits")


def packed_size(n: int, bits: int) -> int:
    """Bytes that ``n`` values of ``bits`` bits take."""
    return -(-n * bits // 8)


def pack(values: NDArray[np.uint8], bits: int) -> bytes:
    """``values`` (each < 2**bits) packed ``8 // bits`` to a byte, first in the low bits."""
    per = 8 // bits
    pad = (-len(values)) % per
    v = np.concatenate([values, np.zeros(pad, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    packed: NDArray[np.uint8] = np.bitwise_or.reduce(v << shifts, axis=1).astype(np.uint8)
    return packed.tobytes()


def unpack(data: bytes | memoryview, bits: int, n: int) -> NDArray[np.uint8]:
    """The first ``n`` values that ``pack`` stored in ``data``."""
    per = 8 // bits
    raw = np.frombuffer(data, dtype=np.uint8)
    shifts = (np.arange(per, dtype=np.uint8) * bits).astype(np.uint8)
    mask = np.uint8((1 << bits) - 1)
    return ((raw[:, None] >> shifts) & mask).reshape(-1)[:n]


def pack_wide(values: NDArray[np.integer], bits: int) -> bytes:
    """``values`` (each < 2**bits, any width up to 32) as a little-endian bit stream."""
    v = np.asarray(values, dtype=np.uint64)
    planes = (v[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)
    return np.packbits(planes.astype(np.uint8).reshape(-1), bitorder="little").tobytes()


def unpack_wide(data: bytes | memoryview, bits: int, n: int) -> NDArray[np.uint64]:
    """The ``n`` values ``pack_wide`` stored in ``data``; ``ValueError`` if padding is set."""
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if np.any(stream[n * bits :]):
        raise ValueError("non-zero padding bits")
    planes = stream[: n * bits].reshape(n, bits).astype(np.uint64)
    out: NDArray[np.uint64] = (planes << np.arange(bits, dtype=np.uint64)).sum(
        axis=1, dtype=np.uint64
    )
    return out
