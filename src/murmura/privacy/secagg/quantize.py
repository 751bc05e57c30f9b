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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from murmura.errors import ConfigError

U32 = NDArray[np.uint32]
_HALF = 2**31


@dataclass(frozen=True, slots=True)
class Quantizer:
    """Encoder of ``(update, weight)`` into a uint32 vector whose sums of n cannot wrap."""

    num_clients: int
    clip: float
    max_weight: float
    stochastic: bool = True

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
        w = float(np.clip(weight, 0.0, self.max_weight))
        x = np.asarray(update).reshape(-1)
        # float64 throughout: integers up to 2^31 must be exact before rounding.
        scaled = np.empty(x.size + 1, dtype=np.float64)
        np.clip(x, -self.clip, self.clip, out=scaled[:-1])
        scaled[:-1] *= w * self.value_scale
        scaled[-1] = w * self.weight_scale
        if self.stochastic:
            if rng is None:
                raise ValueError("stochastic rounding needs an rng")
            scaled += rng.random(scaled.size)
            np.floor(scaled, out=scaled)
        else:
            np.rint(scaled, out=scaled)
        # |scaled| < 2^31, so the int32 cast is exact; the view reinterprets it mod 2^32.
        return scaled.astype(np.int32).view(np.uint32)

    def decode(self, total: U32) -> tuple[NDArray[np.float64], float]:
        """Turn a sum of encoded vectors back into ``(sum of w * x, sum of w)``."""
        signed = total.view(np.int32).astype(np.float64)
        return signed[:-1] / self.value_scale, float(signed[-1] / self.weight_scale)
