"""Half-precision codecs: IEEE float16 and bfloat16 (2 bytes a value, deterministic).

bfloat16 keeps float32's exponent range with 8 bits of mantissa (Kalamkar et al. 2019,
"A Study of BFLOAT16 for Deep Learning Training"); float16 has more mantissa but saturates at
65504 (Micikevicius et al. 2018, "Mixed Precision Training"). Both round to nearest even; the
float16 encoder clips to its range, so a finite delta never becomes infinite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from murmura.compress.base import expect_length, finite_scales
from murmura.types import Vector

FLOAT16_MAX = 65504.0
BFLOAT16_MAX = float(np.frombuffer(np.uint32(0x7F7F0000).tobytes(), np.float32)[0])


@dataclass(frozen=True, slots=True)
class Float16:
    """IEEE 754 half precision, clipped to +-65504 (Micikevicius et al. 2018)."""

    name: str = "float16"
    version: int = 1
    biased: bool = False

    def params(self) -> dict[str, int | float | bool]:
        """No parameters."""
        return {}

    def encoded_size(self, size: int) -> int:
        """Two bytes a value."""
        return 2 * size

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """``x`` clipped to float16's range and rounded to nearest."""
        return np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype("<f2").tobytes()

    def decode(self, payload: bytes, size: int) -> Vector:
        """The float32 vector; non-finite values are refused."""
        expect_length(self, payload, size)
        out = np.frombuffer(payload, dtype="<f2").astype(np.float32)
        finite_scales(self, out, "value", nonnegative=False)
        return out


@dataclass(frozen=True, slots=True)
class BFloat16:
    """bfloat16: float32's top 16 bits, rounded to nearest even (Kalamkar et al. 2019)."""

    name: str = "bfloat16"
    version: int = 1
    biased: bool = False

    def params(self) -> dict[str, int | float | bool]:
        """No parameters."""
        return {}

    def encoded_size(self, size: int) -> int:
        """Two bytes a value."""
        return 2 * size

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """The upper half of each float32, rounded to nearest even."""
        clipped = np.clip(np.asarray(x, dtype=np.float32), -BFLOAT16_MAX, BFLOAT16_MAX)
        u = clipped.view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return rounded.astype("<u2").tobytes()

    def decode(self, payload: bytes, size: int) -> Vector:
        """The float32 vector; non-finite values are refused."""
        expect_length(self, payload, size)
        u = np.frombuffer(payload, dtype="<u2").astype(np.uint32) << 16
        out = u.view(np.float32)
        finite_scales(self, out, "value", nonnegative=False)
        return out
