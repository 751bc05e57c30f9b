"""The client side of a compressed uplink: codec, error feedback and the header, per client.

``CompressedLearner`` wraps any Learner (a star client, a tree leaf, a privatised learner):
its update is encoded (after local DP noise, if any), framed with the codec's header, and
decoded as the receiver does; the result carries what the receiver gets and, in
``metrics["bytes_up"]``, the bytes that crossed the wire.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from murmura.compress import make_codec
from murmura.compress.accounting import BYTES_UP
from murmura.compress.base import Codec
from murmura.compress.feedback import ErrorFeedback
from murmura.compress.frame import frame, unframe
from murmura.learner import Learner
from murmura.seeding import derive_seed
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

if TYPE_CHECKING:
    from murmura.config import Config


class Uplink:
    """One sender's encoder: ``codec``, its residual if ``error_feedback``, its random stream.

    The stream of round ``r`` is derived from ``(seed, r, node)``; with ``shared_mask`` from
    ``(seed, r)`` alone, so every client of the round draws the same random-k index set.
    """

    def __init__(
        self, codec: Codec, node: str, seed: int, error_feedback: bool, shared_mask: bool
    ) -> None:
        self.codec, self.seed, self.shared_mask = codec, seed, shared_mask
        self.node_key = zlib.crc32(node.encode())
        self.error_feedback = error_feedback
        self.feedback: ErrorFeedback | None = None

    def rng(self, round_: int) -> np.random.Generator:
        """The random stream of this sender in ``round_``."""
        keys = (self.seed, round_) if self.shared_mask else (self.seed, round_, self.node_key)
        return np.random.default_rng(derive_seed(*keys))

    def encode(self, round_: int, update: Vector) -> bytes:
        """The framed bytes of ``update`` (plus the residual, with error feedback)."""
        rng = self.rng(round_)
        if not self.error_feedback:
            return frame(self.codec, self.codec.encode(update, rng))
        if self.feedback is None:
            self.feedback = ErrorFeedback(self.codec, update.size)
        payload, _ = self.feedback.encode(update, rng)
        return frame(self.codec, payload)


class CompressedLearner:
    """A Learner whose updates travel through an ``Uplink``; evaluation is unchanged."""

    def __init__(self, inner: Learner, uplink: Uplink) -> None:
        self.inner, self.uplink, self.node_id = inner, uplink, inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        """The inner update as the receiver decodes it, and its size on the wire."""
        res = self.inner.fit(ins)
        blob = self.uplink.encode(ins.round, np.asarray(res.update, dtype=np.float32))
        update = unframe(self.uplink.codec, blob, res.update.size)
        return FitRes(update, res.num_examples, {**res.metrics, BYTES_UP: float(len(blob))})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """The inner learner's evaluation."""
        return self.inner.evaluate(weights)


def uplink_codec(cfg: Config) -> Codec | None:
    """The [compression] uplink codec, or None for float32.

    None under ``[secagg]`` too: secure aggregation quantises inside the protocol
    (``murmura.privacy.secagg.quantize.LevelQuantizer``), the update goes in unencoded.
    """
    c = cfg.compression
    if c.uplink == "none" or cfg.secagg.enabled:
        return None
    return make_codec(c.uplink, **c.args)


def make_uplink(cfg: Config, node: str) -> Uplink | None:
    """The [compression] uplink of sender ``node`` (a simulated client, a deployed worker)."""
    codec = uplink_codec(cfg)
    if codec is None:
        return None
    c = cfg.compression
    feedback = codec.biased if c.error_feedback is None else c.error_feedback
    return Uplink(codec, node, cfg.run.seed, feedback, c.shared_mask)


def apply_compression(cfg: Config, learners: Sequence[Learner]) -> list[Learner]:
    """``learners`` behind the [compression] downlink and uplink; as they are for "none"."""
    from murmura.compress.downlink import apply_downlink

    out: list[Learner] = []
    for learner in apply_downlink(cfg, learners):
        uplink = make_uplink(cfg, learner.node_id)
        out.append(learner if uplink is None else CompressedLearner(learner, uplink))
    return out
