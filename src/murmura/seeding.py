"""Seeded random streams, derived per (run seed, round, client) so runs are reproducible."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer keys by numpy's SeedSequence (stable across runs)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def client_generator(seed: int, round_: int, client: int) -> torch.Generator:
    """The torch generator a client uses to shuffle its samples in one round."""
    import torch  # here, not at the top: the server's streams (numpy) must not load torch

    return torch.Generator().manual_seed(derive_seed(seed, round_, client))


def round_rng(seed: int, round_: int) -> np.random.Generator:
    """The numpy generator the server uses in one round (sampling, noise)."""
    return np.random.default_rng(derive_seed(seed, round_, 2**31 - 1))
