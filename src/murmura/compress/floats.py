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


class HalfPrecision:
    """Two bytes a value, no parameters, deterministic: what both half formats share.

    A subclass names itself and converts (``narrow`` to its 2-byte values, ``widen`` back).
    """

    __slots__ = ()
    name = "half"
    version = 1
    biased = False

    def params(self) -> dict[str, int | float | bool]:
        """No parameters."""
        return {}

    def encoded_size(self, size: int) -> int:
        """Two bytes a value."""
        return 2 * size

    def encode(self, x: Vector, rng: np.random.Generator) -> bytes:
        """``x`` in the 2-byte format, rounded to nearest."""
        return self.narrow(np.asarray(x, dtype=np.float32))

    def decode(self, payload: bytes, size: int) -> Vector:
        """The float32 vector; non-finite values are refused."""
        expect_length(self, payload, size)
        out = self.widen(payload)
        finite_scales(self, out, "value", nonnegative=False)
        return out

    def narrow(self, x: Vector) -> bytes:
        """The 2-byte values of ``x``."""
        raise NotImplementedError

    def widen(self, payload: bytes) -> Vector:
        """The float32 values of a payload."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Float16(HalfPrecision):
    """IEEE 754 half precision, clipped to +-65504 (Micikevicius et al. 2018)."""

    name = "float16"

    def narrow(self, x: Vector) -> bytes:
        """``x`` clipped to float16's range and rounded to nearest."""
        return np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype("<f2").tobytes()

    def widen(self, payload: bytes) -> Vector:
        """The float16 values as float32."""
        return np.frombuffer(payload, dtype="<f2").astype(np.float32)


@dataclass(frozen=True, slots=True)
class BFloat16(HalfPrecision):
    """bfloat16: float32's top 16 bits, rounded to nearest even (Kalamkar et al. 2019)."""

    name = "bfloat16"

    def narrow(self, x: Vector) -> bytes:
        """The upper half of each float32, rounded to nearest even."""
        u = np.clip(x, -BFLOAT16_MAX, BFLOAT16_MAX).view(np.uint32).astype(np.uint64)
        rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
        return rounded.astype("<u2").tobytes()

    def widen(self, payload: bytes) -> Vector:
        """The upper halves, zero-extended to float32."""
        return (np.frombuffer(payload, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
