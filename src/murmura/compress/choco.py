"""CHOCO-gossip: peers mix public copies that travel as compressed differences.

Koloskova, Stich and Jaggi 2019, "Decentralized Stochastic Optimization and Gossip
Algorithms with Compressed Communication". Every peer ``i`` has a public copy ``x^_i`` that
its neighbours hold too. Each round, after local training to ``x_i``, peer ``i`` sends
``q_i = C(x_i - x^_i)`` once to each neighbour; every holder adds ``decode(q_i)`` to
``x^_i``; then ``x_i += step * sum_j w_ij (x^_j - x^_i)``. The copies absorb what the codec
drops over rounds (no separate residual); ``step`` (the consensus step size, gamma) must be
small for coarse codecs, e.g. 0.01 to 0.1 for top-k at 1 %.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from murmura.compress.base import Codec
from murmura.compress.frame import frame, unframe
from murmura.seeding import derive_seed

CHOCO_STREAM = 2
"""Distinguishes CHOCO's random streams from the uplink's and the downlink's."""
COPY_PREFIX = "__choco__/"
"""Names of the public copies among a peer checkpoint's tensors."""


def difference(codec: Codec, seed: int, round_: int, peer: int, diff: np.ndarray) -> bytes:
    """Peer ``peer``'s framed ``q = C(x - x^)`` of ``round_`` (its stream: seed, round, peer)."""
    rng = np.random.default_rng(derive_seed(seed, round_, peer, CHOCO_STREAM))
    return frame(codec, codec.encode(diff, rng))


class ChocoGossip:
    """The public copies of ``n`` peers' models and CHOCO's exchange and mixing steps."""

    def __init__(self, codec: Codec, start: np.ndarray, step: float, seed: int) -> None:
        if not 0 < step <= 1:
            raise ValueError(f"CHOCO-gossip step must be in (0, 1], got {step}")
        self.codec, self.step, self.seed = codec, step, seed
        self.public = np.array(start, dtype=np.float32)
        """``x^``: row ``i`` is peer ``i``'s public copy, as each of its neighbours holds it.

        It starts at the peers' common starting model, which every peer knows (the paper's
        zero start would spend the first rounds sending the model itself, coarsely)."""

    def exchange(self, round_: int, trained: np.ndarray, present: list[int]) -> dict[int, int]:
        """Each present peer's ``q_i``, applied to its public copy; returns its framed bytes."""
        sizes: dict[int, int] = {}
        d = self.public.shape[1]
        for i in present:
            blob = difference(self.codec, self.seed, round_, i, trained[i] - self.public[i])
            self.public[i] += unframe(self.codec, blob, d)
            sizes[i] = len(blob)
        return sizes

    def mix(self, w: np.ndarray, trained: np.ndarray, present: list[int]) -> np.ndarray:
        """``x_i + step * sum_j w_ij (x^_j - x^_i)`` over the present peers, others as trained.

        ``w`` is the round's mixing matrix, rows summing to one, restricted to present peers
        (an absent neighbour's weight goes to the diagonal).
        """
        out = trained.copy()
        keep = np.zeros(len(w), dtype=bool)
        keep[present] = True
        for i in present:
            row = np.where(keep, w[i], 0.0)
            row[i] = 0.0
            pull = row @ (self.public.astype(np.float64) - self.public[i])
            out[i] = trained[i] + self.step * pull.astype(np.float32)
        return out


def gossip_bytes(w: np.ndarray, sizes: dict[int, float]) -> tuple[list[float], list[float]]:
    """(sent, received) bytes of each peer in ``sizes``: one message to each present neighbour."""
    up, down = [], []
    for i, size in sizes.items():
        neighbours = [int(j) for j in np.flatnonzero(w[i]) if j != i and int(j) in sizes]
        up.append(size * len(neighbours))
        down.append(float(sum(sizes[j] for j in neighbours)))
    return up, down


class PeerCopies:
    """One deployed peer's side of CHOCO-gossip: its own public copy and its neighbours'.

    The same steps as ``ChocoGossip`` for peer ``index`` alone: ``encode`` makes its ``q_i``
    (and applies it to its own copy, as its neighbours do on receipt), ``receive`` applies a
    neighbour's decoded ``q_j``, ``mix`` pulls the trained model toward the copies.
    """

    def __init__(
        self, codec: Codec, start: np.ndarray, step: float, seed: int, index: int,
        row: Mapping[int, float],
    ) -> None:  # fmt: skip
        if not 0 < step <= 1:
            raise ValueError(f"CHOCO-gossip step must be in (0, 1], got {step}")
        self.codec, self.step, self.seed, self.index = codec, step, seed, index
        self.row = {j: w for j, w in row.items() if j != index}
        first = np.asarray(start, dtype=np.float32)
        self.public = {j: first.copy() for j in [index, *self.row]}
        """``x^_j`` for this peer and each neighbour, from the common starting model."""

    def encode(self, round_: int, trained: np.ndarray) -> bytes:
        """The peer's framed ``q_i`` of ``round_``, already applied to its own copy."""
        i = self.index
        blob = difference(self.codec, self.seed, round_, i, trained - self.public[i])
        self.public[i] += unframe(self.codec, blob, self.public[i].size)
        return blob

    def receive(self, j: int, q: np.ndarray) -> None:
        """Apply neighbour ``j``'s decoded ``q_j`` to its copy."""
        self.public[j] += q

    def tensors(self) -> dict[str, np.ndarray]:
        """The copies as named tensors (``COPY_PREFIX`` + peer index), for a checkpoint."""
        return {f"{COPY_PREFIX}{j}": v for j, v in self.public.items()}

    def restore(self, tensors: Mapping[str, np.ndarray], where: str) -> None:
        """Take back the copies ``tensors`` wrote; ``ValueError`` naming what does not fit."""
        size = self.public[self.index].size
        for j in self.public:
            got = tensors.get(f"{COPY_PREFIX}{j}")
            if got is None or got.shape != (size,):
                raise ValueError(f"{where} lacks CHOCO-gossip's public copy of peer {j}")
        self.public = {j: np.array(tensors[f"{COPY_PREFIX}{j}"], np.float32) for j in self.public}

    def mix(self, trained: np.ndarray, present: list[int]) -> np.ndarray:
        """``x_i + step * sum_j w_ij (x^_j - x^_i)`` over the neighbours in ``present``."""
        mine = self.public[self.index]
        pull = np.zeros(mine.size, dtype=np.float64)
        for j in sorted(present):
            pull += self.row[j] * (self.public[j].astype(np.float64) - mine)
        return np.asarray(trained + self.step * pull.astype(np.float32), dtype=np.float32)
