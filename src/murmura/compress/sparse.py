"""Sparsifiers: top-k and random-k, meant to run with error feedback.

Both keep ``k = ceil(ratio * d)`` values and are biased without the residual that
``murmura.compress.feedback.ErrorFeedback`` carries to the next round (Stich et al. 2018,
"Sparsified SGD with Memory"). Top-k sends its indices; random-k sends only the seed of its
index set, so clients that draw it from one shared per-round stream send the same mask, which
secure aggregation can sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from murmura.compress import bits as packing
from murmura.compress.base import expect_length, finite_scales
from murmura.errors import ProtocolError
from murmura.types import Vector


def kept(ratio: float, size: int) -> int:
    """Values kept of ``size``: ``ceil(ratio * size)``, at least one of a non-empty vector."""
    return min(size, max(1 if size else 0, math.ceil(ratio * size)))


def index_dtype(size: int) -> np.dtype[np.unsignedinteger[Any]]:
    """The narrowest index type for a vector of ``size`` values: uint16 or uint32."""
    return np.dtype("<u2") if size <= 1 << 16 else np.dtype("<u4")


@dataclass(frozen=True, slots=True)
class Sparsifier:
    """What top-k and random-k share: the share of values kept, and scattering them back.

    A subclass names itself and lays out its payload (``encoded_size``, ``encode``,
    ``decode``).
    """

    ratio: float = 0.01
    name = "sparse"
    version = 1
    biased = True

    def __post_init__(self) -> None:
        if not 0 < self.ratio <= 1:
            raise ValueError(f"{self.name}: ratio must be in (0, 1], got {self.ratio}")

    def params(self) -> dict[str, int | float | bool]:
        """The share of values kept."""
        return {"ratio": self.ratio}

    def encoded_size(self, size: int) -> int:
        """Exact payload bytes for a vector of ``size`` elements."""
        raise NotImplementedError

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """The payload of ``x``."""
        raise NotImplementedError

    def decode(self, payload: bytes, size: int) -> Vector:
        """The vector that ``payload`` encodes."""
        raise NotImplementedError

    def scatter(self, payload: bytes, offset: int, idx: np.ndarray, size: int) -> Vector:
        """A zero vector with the float32 values at ``offset`` of ``payload`` at ``idx``."""
        values = np.frombuffer(payload, dtype="<f4", offset=offset, count=len(idx))
        finite_scales(self, values, "value", nonnegative=False)
        out = np.zeros(size, dtype=np.float32)
        out[idx] = values
        return out


@dataclass(frozen=True, slots=True)
class TopK(Sparsifier):
    """The ``k`` largest magnitudes and their indices (Stich et al. 2018).

    With error feedback as in Karimireddy et al. 2019. Payload: ``k`` increasing indices
    (uint16 when the vector has at most 65,536 values, else uint32), then ``k`` float32
    values.
    """

    name = "topk"
    version = 2

    def encoded_size(self, size: int) -> int:
        """6 bytes per kept value (8 beyond 65,536 values)."""
        return (index_dtype(size).itemsize + 4) * kept(self.ratio, size)

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """Indices (sorted) and values of the ``k`` largest ``|x|``."""
        k = kept(self.ratio, x.size)
        idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :]) if k else x[:0]
        idx = np.asarray(idx, dtype=index_dtype(x.size))
        return idx.tobytes() + np.asarray(x[idx], dtype="<f4").tobytes()

    def decode(self, payload: bytes, size: int) -> Vector:
        """A zero vector with the sent values at their indices."""
        expect_length(self, payload, size)
        k = kept(self.ratio, size)
        dtype = index_dtype(size)
        idx = np.frombuffer(payload, dtype=dtype, count=k)
        if k and (int(idx[-1]) >= size or np.any(np.diff(idx.astype(np.int64)) <= 0)):
            raise ProtocolError(f"topk: indices not increasing within 0..{size - 1}")
        return self.scatter(payload, dtype.itemsize * k, idx, size)


@dataclass(frozen=True, slots=True)
class RandomK(Sparsifier):
    """``k`` values at indices drawn from a seed (Stich et al. 2018, rand-k with memory).

    Payload: the uint64 seed, then ``k`` float32 values; the decoder redraws the indices, so
    none can be out of range. Unscaled: unbiased only up to the factor ``k / d``, which error
    feedback makes up over rounds.
    """

    name = "randk"

    def encoded_size(self, size: int) -> int:
        """8 bytes of seed plus 4 per kept value."""
        return 8 + 4 * kept(self.ratio, size)

    @staticmethod
    def indices(seed: int, k: int, size: int) -> np.ndarray:
        """The sorted index set of ``seed``: ``k`` distinct values in ``0..size-1``."""
        return np.sort(np.random.default_rng(seed).choice(size, k, replace=False))

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """A seed drawn from ``rng`` and the values at its indices."""
        seed = int(rng.integers(0, 2**63))
        idx = self.indices(seed, kept(self.ratio, x.size), x.size)
        head = np.array([seed], dtype="<u8").tobytes()
        return head + np.asarray(x[idx], dtype="<f4").tobytes()

    def decode(self, payload: bytes, size: int) -> Vector:
        """A zero vector with the sent values at the seed's indices."""
        expect_length(self, payload, size)
        seed = int(np.frombuffer(payload, dtype="<u8", count=1)[0])
        return self.scatter(payload, 8, self.indices(seed, kept(self.ratio, size), size), size)


@dataclass(frozen=True, slots=True)
class TopKQuantized(Sparsifier):
    """Top-k with compact indices and values quantised to ``bits`` bits.

    The ``k`` largest magnitudes as in ``TopK`` (meant for error feedback, which also carries
    the quantisation error), their increasing indices packed at ``ceil(log2 d)`` bits each
    instead of 16 or 32, and their values rounded stochastically (unbiased, as in QSGD,
    Alistarh et al. 2017) to one of ``2**bits`` evenly spaced levels between ``-s`` and
    ``s``, ``s`` their largest magnitude. Payload: float32 ``s``, the packed indices, the
    packed levels; padding bits are zero.
    """

    bits: int = 4
    name = "topkq"

    def __post_init__(self) -> None:
        Sparsifier.__post_init__(self)
        if self.bits not in packing.WIDTHS:
            raise ValueError(f"topkq: bits must be one of {packing.WIDTHS}, got {self.bits}")

    def params(self) -> dict[str, int | float | bool]:
        """The share of values kept and the bits of each value."""
        return {"ratio": self.ratio, "bits": self.bits}

    def encoded_size(self, size: int) -> int:
        """4 bytes of scale, then ``ceil(log2 size)`` + ``bits`` bits per kept value."""
        k = kept(self.ratio, size)
        return 4 + packing.packed_size(k, index_bits(size)) + packing.packed_size(k, self.bits)

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """Scale, packed indices and stochastically rounded levels of the ``k`` largest."""
        k = kept(self.ratio, x.size)
        idx = np.sort(np.argpartition(np.abs(x), x.size - k)[x.size - k :]) if k else x[:0]
        idx = np.asarray(idx, dtype=np.int64)
        values = np.asarray(x[idx], dtype=np.float32)
        scale = np.float32(np.max(np.abs(values))) if k else np.float32(0)
        top = (1 << self.bits) - 1
        pos = (values / scale + 1) * (top / 2) if scale > 0 else np.zeros(k)
        levels = np.floor(pos)
        levels += rng.random(k) < pos - levels
        codes = np.clip(levels, 0, top).astype(np.uint8)
        head = np.array([scale], dtype="<f4").tobytes()
        return head + packing.pack_wide(idx, index_bits(x.size)) + packing.pack(codes, self.bits)

    def decode(self, payload: bytes, size: int) -> Vector:
        """A zero vector with the levels' values at the sent indices."""
        expect_length(self, payload, size)
        k = kept(self.ratio, size)
        scale = np.frombuffer(payload, dtype="<f4", count=1)
        finite_scales(self, scale, "scale")
        width = index_bits(size)
        end = 4 + packing.packed_size(k, width)
        try:
            idx = packing.unpack_wide(memoryview(payload)[4:end], width, k).astype(np.int64)
        except ValueError as exc:
            raise ProtocolError(f"topkq: indices: {exc}") from None
        if k and (int(idx[-1]) >= size or np.any(np.diff(idx) <= 0)):
            raise ProtocolError(f"topkq: indices not increasing within 0..{size - 1}")
        codes = packing.unpack(memoryview(payload)[end:], self.bits, k)
        last = packing.packed_size(k, self.bits) * 8 // self.bits
        if last > k and np.any(packing.unpack(memoryview(payload)[end:], self.bits, last)[k:]):
            raise ProtocolError("topkq: non-zero padding bits after the levels")
        top = (1 << self.bits) - 1
        out = np.zeros(size, dtype=np.float32)
        out[idx] = scale[0] * (codes.astype(np.float32) * np.float32(2 / top) - 1)
        return out


def index_bits(size: int) -> int:
    """Bits of an index into ``size`` values: ``ceil(log2 size)``, at least one."""
    return max(1, (size - 1).bit_length())
