"""Public parameters of one SecAgg+ round, shared by the server and every client."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from murmura.errors import ConfigError
from murmura.privacy.secagg.quantize import LevelQuantizer, Quantizer


class Stage(IntEnum):
    """The four stages of SecAgg (Bonawitz et al. 2017), as kept by SecAgg+ (Bell et al. 2020)."""

    ADVERTISE = 0
    SHARE = 1
    MASKED_INPUT = 2
    UNMASK = 3


def default_neighbours(num_clients: int) -> int:
    """Neighbours per client: the even number nearest above 2*log2(n), at most n - 1.

    Bell et al. 2020 show that k = O(log n) neighbours suffice; the constant 2 keeps
    neighbourhoods large enough to survive the dropout rates seen in practice.
    """
    if num_clients < 2:
        raise ConfigError(f"secure aggregation needs at least 2 clients, got {num_clients}")
    k = 2 * math.ceil(math.log2(num_clients))
    return min(num_clients - 1, k + (k % 2))


def default_threshold(neighbours: int) -> int:
    """Shamir threshold t: a strict majority of a closed neighbourhood (k neighbours + self).

    With a majority, two disjoint groups of share holders can never both reach t, so a server
    that tells some holders "u dropped" and others "u survived" cannot collect both of u's
    secrets from honest clients (Bonawitz et al. 2017, section 4).
    """
    return neighbours // 2 + 1


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """What every party of a round must agree on before it starts.

    ``neighbours`` is the degree k of the random Harary graph (even, or n - 1 for the complete
    graph, which is plain SecAgg); ``threshold`` is the Shamir threshold t: each client shares
    its secrets among its *closed* neighbourhood (its k neighbours and itself, as SecAgg shares
    among all n including oneself), and t of those k + 1 must survive for the server to unmask
    its contribution. With the complete graph, up to n - t clients may drop after sending
    their masked input. Each
    update coordinate is clipped to [-clip, clip] and each weight to [0, max_weight].
    ``graph_seed`` is public: it fixes the neighbour graph, not any secret. ``level_bits``
    (8) quantises the update to that many bits on a public grid and masks in the
    ring 2^16 (:class:`LevelQuantizer`); None keeps the fixed-point ring 2^32.
    """

    num_clients: int
    dim: int
    neighbours: int
    threshold: int
    clip: float = 1.0
    max_weight: float = 1.0
    round_: int = 0
    graph_seed: int = 0
    rounding: Literal["stochastic", "deterministic"] = "stochastic"
    context: bytes = b""
    level_bits: int | None = None

    def __post_init__(self) -> None:
        n, k, t = self.num_clients, self.neighbours, self.threshold
        if n < 2:
            raise ConfigError(f"secure aggregation needs at least 2 clients, got {n}")
        if self.dim < 1:
            raise ConfigError(f"dim must be positive, got {self.dim}")
        if not 1 <= k <= n - 1:
            raise ConfigError(f"neighbours must be in [1, {n - 1}] for {n} clients, got {k}")
        if k != n - 1 and k % 2:
            raise ConfigError(f"neighbours must be even (or n - 1 = {n - 1}), got {k}")
        if not 1 <= t <= k + 1:
            raise ConfigError(f"threshold must be in [1, neighbours + 1 = {k + 1}], got {t}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ConfigError(f"clip must be positive and finite, got {self.clip}")
        if not (self.max_weight > 0 and math.isfinite(self.max_weight)):
            raise ConfigError(f"max_weight must be positive and finite, got {self.max_weight}")
        if self.rounding not in ("stochastic", "deterministic"):
            raise ConfigError(
                f"rounding must be 'stochastic' or 'deterministic', got {self.rounding!r}"
            )
        if self.round_ < 0 or self.graph_seed < 0:
            raise ConfigError("round_ and graph_seed must be non-negative")
        self.quantizer()  # a quantised round whose sum would wrap fails here, with the numbers

    @property
    def length(self) -> int:
        """Length of a masked vector: the update plus one coordinate for the weight."""
        return self.dim + 1

    def binding(self) -> bytes:
        """Bytes that tie keys, signatures and ciphertexts to this round and run."""
        ring = b"" if self.level_bits is None else b"q%d|" % self.level_bits
        head = b"murmura-secagg/v1|" + ring
        return head + self.round_.to_bytes(8, "little") + b"|" + self.context

    @property
    def word_bytes(self) -> int:
        """Bytes of one masked word: 4 in the ring 2^32, 2 in the quantised ring 2^16."""
        return 4 if self.level_bits is None else 2

    def quantizer(self) -> Quantizer | LevelQuantizer:
        """Return the quantiser every party derives from these public parameters."""
        stochastic = self.rounding == "stochastic"
        n, c, w = self.num_clients, self.clip, self.max_weight
        if self.level_bits is None:
            return Quantizer(n, c, w, stochastic)
        return LevelQuantizer(n, c, w, self.level_bits, stochastic)
