"""A compressed downlink: each client gets the model as a delta against the one it holds.

The sender keeps, per client, the model that client holds (``held``) and sends
``C(global - held)``; both ends add the decoded delta to ``held``. What the codec dropped
stays in ``global - held`` and is sent with the next delta: error feedback on the downlink, as
in DoubleSqueeze (Tang et al. 2019) and Artemis (Philippenko and Dieuleveut 2020). A client
that holds nothing yet gets the float32 model. The client trains from ``held``, and its
update is a delta against it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from murmura.compress import make_codec
from murmura.compress.accounting import BYTES_DOWN, dense_bytes
from murmura.compress.base import Codec
from murmura.compress.frame import frame, unframe
from murmura.learner import Learner
from murmura.seeding import derive_seed
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

if TYPE_CHECKING:
    from murmura.config import Config

DOWNLINK_STREAM = 1
"""Distinguishes the downlink's random stream from the uplink's of the same node and round."""


def delta_step(
    codec: Codec, seed: int, node: str, round_: int, weights: Vector, held: Vector
) -> tuple[bytes, Vector]:
    """(framed ``C(weights - held)``, the model ``held`` plus the decoded delta).

    The random stream is ``(seed, round, node)``'s downlink stream, so a deployed coordinator
    (``murmura.node.downlink``) sends the bytes the simulation computes.
    """
    keys = (seed, round_, zlib.crc32(node.encode()), DOWNLINK_STREAM)
    blob = frame(codec, codec.encode(weights - held, np.random.default_rng(derive_seed(*keys))))
    return blob, held + unframe(codec, blob, held.size)


class Downlink:
    """The model one client holds, and the encoder that moves it towards the global model."""

    def __init__(self, codec: Codec, node: str, seed: int) -> None:
        self.codec, self.seed, self.node = codec, seed, node
        self.held: Vector | None = None

    def send(self, round_: int, weights: Vector) -> int:
        """Update ``held`` with what the client receives for ``weights``; return its bytes."""
        if self.held is None:
            self.held = np.array(weights, dtype=np.float32)
            return dense_bytes(self.held.size)
        blob, self.held = delta_step(self.codec, self.seed, self.node, round_, weights, self.held)
        return len(blob)


class DownlinkLearner:
    """A Learner that trains from the model its compressed downlink delivered."""

    def __init__(self, inner: Learner, downlink: Downlink) -> None:
        self.inner, self.downlink, self.node_id = inner, downlink, inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        """The inner fit from the held model; ``metrics["bytes_down"]`` what the model took."""
        nbytes = self.downlink.send(ins.round, np.asarray(ins.weights, dtype=np.float32))
        assert self.downlink.held is not None
        res = self.inner.fit(FitIns(ins.round, self.downlink.held, ins.config))
        return FitRes(res.update, res.num_examples, {**res.metrics, BYTES_DOWN: float(nbytes)})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """The inner learner's evaluation of ``weights`` (sent in full for evaluation)."""
        return self.inner.evaluate(weights)


def downlink_codec(cfg: Config) -> Codec | None:
    """The [compression] downlink codec, or None for float32."""
    c = cfg.compression
    return None if c.downlink == "none" else make_codec(c.downlink, **c.downlink_args)


def apply_downlink(cfg: Config, learners: Sequence[Learner]) -> list[Learner]:
    """``learners`` behind the [compression] downlink; unchanged when it is "none"."""
    codec = downlink_codec(cfg)
    if codec is None:
        return list(learners)
    return [DownlinkLearner(x, Downlink(codec, x.node_id, cfg.run.seed)) for x in learners]
