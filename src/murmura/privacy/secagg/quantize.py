"""Fixed-point quantisation of weighted updates into integers mod 2^32, and back.

Masking (Bonawitz et al. 2017) works in the group Z_{2^32}, so each client maps its float
update to integers first. A client sends ``[w * clip(x, c), w]`` with ``w`` clipped to
``[0, W]``: every update coordinate lies in ``[-c W, c W]`` and the weight in ``[0, W]``.
Values are encoded as signed integers in two's complement mod 2^32, so the sum decodes
correctly as long as its magnitude stays below 2^31. With ``n`` clients and at most one unit
of rounding error per client, ``|sum| <= n (c W s + 1)``; the scale is therefore

    s_x = (2^31 - 1 - n) / (n c W)   for update coordinates,
    s_w = (2^31 - 1 - n) / (n W)     for the weight coordinate,

and the sum of any subset of the n clients cannot wrap. The resolution is ``1 / s``, e.g.
about 5e-8 for n = 100, c = W = 1, well below float32 precision of typical updates.

:class:`LevelQuantizer` is the compressed alternative (``compression.uplink = "quantize"``):
8-bit levels on a public grid, summed in the ring 2^16, 2 bytes a word instead of 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError

U32 = NDArray[np.uint32]
Ring = NDArray[np.unsignedinteger]
_HALF = 2**31
RING_BITS = 16
"""Width of the ring of a quantised round (``LevelQuantizer``): uint16 words on the wire."""


@dataclass(frozen=True, slots=True)
class Quantizer:
    """Encoder of ``(update, weight)`` into a uint32 vector whose sums of n cannot wrap."""

    num_clients: int
    clip: float
    max_weight: float
    stochastic: bool = True
    dtype: type[np.unsignedinteger] = np.uint32
    """The ring's word: the masked vector is ``len(update) + 1`` of these, mod 2^32."""

    def __post_init__(self) -> None:
        if self.num_clients < 1 or self.clip <= 0 or self.max_weight <= 0:
            raise ConfigError(
                f"Quantizer needs num_clients >= 1, clip > 0, max_weight > 0; got "
                f"{self.num_clients}, {self.clip}, {self.max_weight}"
            )

    @property
    def value_scale(self) -> float:
        """Integer units per unit of ``w * x``."""
        return (_HALF - 1 - self.num_clients) / (self.num_clients * self.clip * self.max_weight)

    @property
    def weight_scale(self) -> float:
        """Integer units per unit of weight."""
        return (_HALF - 1 - self.num_clients) / (self.num_clients * self.max_weight)

    def encode(
        self, update: NDArray[np.floating], weight: float, rng: np.random.Generator | None = None
    ) -> U32:
        """Quantise ``[w * clip(update), w]`` to a uint32 vector of length ``len(update) + 1``.

        Stochastic rounding (unbiased) needs ``rng``; deterministic rounding rounds to nearest.
        """
        scaled = _rounded(self, update, weight, rng)
        # |scaled| < 2^31, so the int32 cast is exact; the view reinterprets it mod 2^32.
        return scaled.astype(np.int32).view(np.uint32)

    def decode(self, total: U32) -> tuple[NDArray[np.float64], float]:
        """Turn a sum of encoded vectors back into ``(sum of w * x, sum of w)``."""
        signed = total.view(np.int32).astype(np.float64)
        return signed[:-1] / self.value_scale, float(signed[-1] / self.weight_scale)


def max_clients(bits: int) -> int:
    """Most clients whose ``bits``-bit levels sum in the 16-bit ring without wrapping."""
    return int((2 ** (RING_BITS - 1) - 1) // (2 ** (bits - 1) - 1))


def ring_bits_needed(bits: int, num_clients: int) -> int:
    """Bits a sum of ``num_clients`` signed ``bits``-bit levels needs: bits + ceil(log2 n)."""
    return bits + math.ceil(math.log2(max(num_clients, 1)))


@dataclass(frozen=True, slots=True)
class LevelQuantizer:
    """Unbiased stochastic quantisation to ``bits``-bit levels on a public grid, mod 2^16.

    Each client sends ``[w * clip(x, c), w]`` as integers: update coordinates become levels
    in ``[-L, L]`` with ``L = 2^(bits-1) - 1`` on the grid ``c W / L`` (public: derived from
    the clip and weight bounds every party already agrees on, never from a client's own
    values, which would leak them), rounded stochastically so that ``E[level] = v L / (c W)``
    (Suresh et al. 2017; the integer-grid form of Kairouz et al. 2021, "The distributed
    discrete Gaussian mechanism"). The sum of ``n`` clients' levels lies in ``[-n L, n L]``,
    so the ring 2^16 holds it for ``n <= max_clients(bits)`` (258 at 8 bits): masks are drawn
    in that ring and each masked word costs 2 bytes instead of 4. The weight coordinate uses
    the ring's full range, ``(2^15 - 1 - n) / (n W)`` units per unit of weight (at least
    126 units per ``W`` for n <= 258). Only 8 bits: 2 or 4-bit levels would cost the same
    2 bytes a word in this ring.
    """

    num_clients: int
    clip: float
    max_weight: float
    bits: int = 8
    stochastic: bool = True
    dtype: type[np.unsignedinteger] = np.uint16

    def __post_init__(self) -> None:
        if self.bits != 8:
            raise ConfigError(
                f"secure quantisation uses 8-bit levels in the 16-bit ring, got {self.bits} bits "
                "(fewer bits would save no bytes in that ring)"
            )
        if self.clip <= 0 or self.max_weight <= 0:
            raise ConfigError(f"clip, max_weight must be > 0, got {self.clip}, {self.max_weight}")
        if not 1 <= self.num_clients <= max_clients(self.bits):
            raise ConfigError(
                f"{self.num_clients} clients' {self.bits}-bit levels need "
                f"{ring_bits_needed(self.bits, self.num_clients)} bits; the {RING_BITS}-bit ring "
                f"of quantised secure aggregation holds at most {max_clients(self.bits)} clients"
            )

    @property
    def levels(self) -> int:
        """L: the largest level magnitude."""
        return int(2 ** (self.bits - 1) - 1)

    @property
    def value_scale(self) -> float:
        """Levels per unit of ``w * x``: the public grid is its inverse."""
        return self.levels / (self.clip * self.max_weight)

    @property
    def weight_scale(self) -> float:
        """Integer units per unit of weight."""
        room = float(2 ** (RING_BITS - 1) - 1 - self.num_clients)
        return room / (self.num_clients * self.max_weight)

    def encode(
        self, update: NDArray[np.floating], weight: float, rng: np.random.Generator | None = None
    ) -> Ring:
        """Quantise ``[w * clip(update), w]`` to ``len(update) + 1`` uint16 words."""
        scaled = _rounded(self, update, weight, rng)
        np.clip(scaled[:-1], -self.levels, self.levels, out=scaled[:-1])  # float64 edge cases
        return scaled.astype(np.int16).view(np.uint16)

    def decode(self, total: Ring) -> tuple[NDArray[np.float64], float]:
        """Turn a sum of encoded vectors back into ``(sum of w * x, sum of w)``."""
        signed = total.astype(np.uint16).view(np.int16).astype(np.float64)
        return signed[:-1] / self.value_scale, float(signed[-1] / self.weight_scale)


def _rounded(
    q: Quantizer | LevelQuantizer,
    update: NDArray[np.floating],
    weight: float,
    rng: np.random.Generator | None,
) -> NDArray[np.float64]:
    """``[w * clip(update), w]`` on ``q``'s grid, rounded (stochastically when ``q`` says so).

    float64 throughout: integers up to 2^31 must be exact before rounding.
    """
    w = float(np.clip(weight, 0.0, q.max_weight))
    x = np.asarray(update).reshape(-1)
    scaled = np.empty(x.size + 1, dtype=np.float64)
    np.clip(x, -q.clip, q.clip, out=scaled[:-1])
    scaled[:-1] *= w * q.value_scale
    scaled[-1] = w * q.weight_scale
    if q.stochastic:
        if rng is None:
            raise ValueError("stochastic rounding needs an rng")
        scaled += rng.random(scaled.size)
        np.floor(scaled, out=scaled)
    else:
        np.rint(scaled, out=scaled)
    return scaled
