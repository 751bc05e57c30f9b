"""Unbiased stochastic quantisers: k-level min-max quantisation and QSGD.

Both round stochastically, so that ``E[decode(encode(x))] = x``, and work in buckets (a
scale per ``bucket`` values) so that one large coordinate does not flatten the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murmura.compress import bits as packing
from murmura.compress.base import buckets, expect_length, finite_scales
from murmura.errors import ProtocolError
from murmura.types import Vector


def _bucket_index(size: int, bucket: int) -> np.ndarray:
    return np.arange(size) // bucket


@dataclass(frozen=True, slots=True)
class StochasticQuantizer:
    """``2**bits`` levels between each bucket's min and max, rounded at random.

    Stochastic k-level quantisation (Suresh et al. 2017, "Distributed Mean Estimation with
    Limited Communication"): unbiased, with variance at most ``(max - min)**2 / 4`` per value
    over ``(2**bits - 1)**2``. Payload: per bucket a float32 min and step, then the levels.
    """

    bits: int = 8
    bucket: int = 512
    name: str = "quantize"
    version: int = 1
    biased: bool = False

    def __post_init__(self) -> None:
        if self.bits not in packing.WIDTHS:
            raise ValueError(f"quantize: bits must be one of {packing.WIDTHS}, got {self.bits}")
        if self.bucket < 1:
            raise ValueError(f"quantize: bucket must be >= 1, got {self.bucket}")

    def params(self) -> dict[str, int | float | bool]:
        """Bits per value and bucket size."""
        return {"bits": self.bits, "bucket": self.bucket}

    def encoded_size(self, size: int) -> int:
        """8 bytes per bucket plus ``bits`` per value."""
        return 8 * buckets(size, self.bucket) + packing.packed_size(size, self.bits)

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """Each value to one of the two levels around it, chosen with unbiased odds."""
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return b""
        starts = np.arange(0, x.size, self.bucket)
        lo = np.minimum.reduceat(x, starts)
        step = (np.maximum.reduceat(x, starts) - lo) / np.float32((1 << self.bits) - 1)
        idx = _bucket_index(x.size, self.bucket)
        safe = np.where(step > 0, step, np.float32(1))
        scaled = (x - lo[idx]) / safe[idx]
        levels = np.floor(scaled + rng.random(x.size, dtype=np.float32))
        q = np.clip(levels, 0, (1 << self.bits) - 1).astype(np.uint8)
        head = np.stack([lo, step.astype(np.float32)], axis=1).astype("<f4").tobytes()
        return head + packing.pack(q, self.bits)

    def decode(self, payload: bytes, size: int) -> Vector:
        """``min + level * step`` for each value."""
        expect_length(self, payload, size)
        nb = buckets(size, self.bucket)
        head = np.frombuffer(payload, dtype="<f4", count=2 * nb).reshape(nb, 2)
        finite_scales(self, head[:, 0], "bucket minimum", nonnegative=False)
        finite_scales(self, head[:, 1], "bucket step")
        q = packing.unpack(memoryview(payload)[8 * nb :], self.bits, size)
        idx = _bucket_index(size, self.bucket)
        with np.errstate(over="ignore", invalid="ignore"):  # refused just below
            out: Vector = (head[idx, 0] + q.astype(np.float32) * head[idx, 1]).astype(np.float32)
        finite_scales(self, out, "value", nonnegative=False)
        return out


@dataclass(frozen=True, slots=True)
class QSGD:
    """QSGD with ``s`` levels (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD").

    Per bucket its l2 norm; each value becomes ``sign * norm * l / s`` with ``l`` in ``0..s``
    rounded at random, unbiased. Payload: per bucket a float32 norm, then ``sign * l + s``
    packed in the fewest of 2, 4 or 8 bits that hold ``2 s``.
    """

    levels: int = 1
    bucket: int = 512
    name: str = "qsgd"
    version: int = 1
    biased: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.levels <= 127:
            raise ValueError(f"qsgd: levels must be in 1..127, got {self.levels}")
        if self.bucket < 1:
            raise ValueError(f"qsgd: bucket must be >= 1, got {self.bucket}")

    @property
    def bits(self) -> int:
        """Bits per packed value."""
        return packing.width_for(2 * self.levels)

    def params(self) -> dict[str, int | float | bool]:
        """Levels and bucket size."""
        return {"levels": self.levels, "bucket": self.bucket}

    def encoded_size(self, size: int) -> int:
        """4 bytes per bucket plus ``bits`` per value."""
        return 4 * buckets(size, self.bucket) + packing.packed_size(size, self.bits)

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """Each magnitude to one of the two levels around it, with unbiased odds."""
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return b""
        starts = np.arange(0, x.size, self.bucket)
        norms = np.sqrt(np.add.reduceat(x.astype(np.float64) ** 2, starts)).astype(np.float32)
        idx = _bucket_index(x.size, self.bucket)
        safe = np.where(norms > 0, norms, np.float32(1))
        scaled = np.abs(x) / safe[idx] * np.float32(self.levels)
        level = np.clip(np.floor(scaled + rng.random(x.size, dtype=np.float32)), 0, self.levels)
        signed = np.where(x < 0, -level, level) + self.levels
        return norms.astype("<f4").tobytes() + packing.pack(signed.astype(np.uint8), self.bits)

    def decode(self, payload: bytes, size: int) -> Vector:
        """``norm * (v - s) / s`` for each packed ``v``."""
        expect_length(self, payload, size)
        nb = buckets(size, self.bucket)
        norms = np.frombuffer(payload, dtype="<f4", count=nb)
        finite_scales(self, norms, "bucket norm")
        v = packing.unpack(memoryview(payload)[4 * nb :], self.bits, size)
        if v.size and int(v.max()) > 2 * self.levels:
            raise ProtocolError(f"qsgd: level {int(v.max())} above 2 * {self.levels}")
        signed = v.astype(np.float32) - np.float32(self.levels)
        scale = norms[_bucket_index(size, self.bucket)] / np.float32(self.levels)
        out: Vector = (scale * signed).astype(np.float32)
        finite_scales(self, out, "value", nonnegative=False)
        return out
