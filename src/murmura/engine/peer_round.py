"""One peer's round in peer-to-peer learning: train, send, then mix what the neighbours sent.

Written once for the in-process simulation (``murmura.sim.p2p.P2PSimulation``, every peer of
the graph in turn) and a deployed peer (``murmura.node.peer.Peer``, which fetches its
neighbours' messages over gRPC between the halves). A round is D-PSGD's "local step(s), then
mix" (Lian et al. 2017) or gossip learning's "local epochs, then mix": the peer trains from its
model (``local_step``), sends its trained model or, red-teaming, its Byzantine sender's
(``message``), and mixes its trained model with the messages its neighbours sent
(``mix``, with the mixing row of its graph; a neighbour that sent nothing is skipped and its
weight goes back to the peer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from murmura.attacks.peer_sender import RoundSender
from murmura.learner import Learner
from murmura.types import FitIns, Vector


class Mixer(Protocol):
    """Combines a peer's own model with the models its neighbours sent this round."""

    def __call__(
        self, node: int, own: Vector, received: Mapping[int, Vector], weights: Mapping[int, float]
    ) -> Vector:
        """The peer's next model; ``weights`` is its mixing row (self included)."""
        ...


def local_step(learner: Learner, weights: Vector, round_: int) -> tuple[Vector, float]:
    """A peer's training in a round: its model after ``learner.fit`` and the training loss.

    The model is ``weights + update``; the loss is NaN when the learner reports none (local
    DP drops it: it was computed on private data).
    """
    start = np.asarray(weights, dtype=np.float32)
    res = learner.fit(FitIns(round_, start))
    loss = float(res.metrics.get("train_loss", float("nan")))
    return (start + np.asarray(res.update, dtype=np.float32)).astype(np.float32), loss


def message(round_: int, before: Vector, trained: Vector, sender: RoundSender | None) -> Vector:
    """What the peer sends this round: its trained model, or what its Byzantine sender makes."""
    return trained if sender is None else sender(round_, before, trained)


def mix(
    mixer: Mixer,
    node: int,
    trained: Vector,
    received: Mapping[int, Vector],
    row: Mapping[int, float],
) -> Vector:
    """The peer's next model: ``mixer`` over its row's neighbours that sent one this round."""
    present = {j: m for j, m in received.items() if j != node and j in row}
    return mixer(node, trained, present, row)
