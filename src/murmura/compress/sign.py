"""Scaled sign compression, for EF-signSGD.

Karimireddy et al. 2019, "Error Feedback Fixes SignSGD and other Gradient Compression
Schemes". Each value becomes ``+-||x||_1 / d`` (per bucket): one bit a value plus a
float32 scale per bucket. Biased; with error feedback it converges like SGD.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murmura.compress import bits as packing
from murmura.compress.base import buckets, expect_length, finite_scales
from murmura.types import Vector


@dataclass(frozen=True, slots=True)
class Sign:
    """Signs times each bucket's mean magnitude (Karimireddy et al. 2019)."""

    bucket: int = 4096
    name: str = "sign"
    version: int = 1
    biased: bool = True

    def __post_init__(self) -> None:
        if self.bucket < 1:
            raise ValueError(f"sign: bucket must be >= 1, got {self.bucket}")

    def params(self) -> dict[str, int | float | bool]:
        """The bucket size."""
        return {"bucket": self.bucket}

    def encoded_size(self, size: int) -> int:
        """4 bytes per bucket plus one bit per value."""
        return 4 * buckets(size, self.bucket) + packing.packed_size(size, 1)

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """Per bucket ``mean |x|``, then the sign bits (1: non-negative)."""
        x = np.asarray(x, dtype=np.float32)
        if x.size == 0:
            return b""
        starts = np.arange(0, x.size, self.bucket)
        counts = np.diff(np.append(starts, x.size))
        scale = (np.add.reduceat(np.abs(x).astype(np.float64), starts) / counts).astype("<f4")
        return scale.tobytes() + packing.pack((x >= 0).astype(np.uint8), 1)

    def decode(self, payload: bytes, size: int) -> Vector:
        """``scale * (+-1)`` for each value."""
        expect_length(self, payload, size)
        nb = buckets(size, self.bucket)
        scale = np.frombuffer(payload, dtype="<f4", count=nb)
        finite_scales(self, scale, "scale")
        signs = packing.unpack(memoryview(payload)[4 * nb :], 1, size).astype(np.float32) * 2 - 1
        return (scale[np.arange(size) // self.bucket] * signs).astype(np.float32)
