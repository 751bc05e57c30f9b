"""A worker's side of a secure aggregation round over gRPC: the SecAgg+ client stages.

After local training the worker keeps its update and answers the coordinator's requests step
by step (``proto/secagg.proto``); its plaintext update never leaves the process. Identity:
the worker's SecAgg index is its certificate's node id's position in the round's cohort, and
the Ed25519 key that signs its advertised keys is generated afresh for every round; its public
half travels with the advertised keys over the mTLS channel, where the coordinator binds it to
the certificate's node id and hands it to the neighbours. The signatures therefore protect the
key exchange against forgery by other workers and in transit, not against a coordinator that
substitutes keys: the honest-but-curious server of ``murmura.privacy.secagg``'s threat model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, MutableMapping
from typing import Literal

import grpc
import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from murmura.errors import ConfigError, InstructionRejected, ProtocolError
from murmura.node.instructions import check_secagg_setup
from murmura.privacy.clipping import clip_vector
from murmura.privacy.secagg import SecAggAbort, SecAggClient, SecAggConfig
from murmura.privacy.secagg.messages import (
    KeyDirectory,
    MaskRequest,
    ShareDelivery,
    UnmaskRequest,
    decode_as,
    encode,
)
from murmura.transport import codec
from murmura.transport.proto import secagg_pb2 as spb
from murmura.transport.secagg_service import SecAggLink
from murmura.types import Vector

log = logging.getLogger(__name__)

StepHook = Callable[[int, int], None]
"""Called with (round, step) once the coordinator accepted this node's answer for ``step``."""
Answer = Callable[[bytes], bytes]

_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def setup_config(setup: spb.SecAggSetup, run_id: str, round_: int) -> SecAggConfig:
    """The round's public parameters; ``context`` binds keys and ciphertexts to the run."""
    rounding: Literal["stochastic", "deterministic"] = (
        "deterministic" if setup.rounding == "deterministic" else "stochastic"
    )
    return SecAggConfig(
        num_clients=setup.num_clients, dim=setup.dim, neighbours=setup.neighbours,
        threshold=setup.threshold, clip=setup.clip, max_weight=setup.max_weight,
        round_=round_, graph_seed=setup.graph_seed, rounding=rounding,
        context=run_id.encode(), level_bits=setup.level_bits or None,
    )  # fmt: skip


def weighted(setup: spb.SecAggSetup, update: Vector, num_examples: int) -> tuple[Vector, float]:
    """What this node masks: under central DP its clipped update with weight min(n/cap, 1)."""
    if setup.dp_clip_norm <= 0:
        return update, float(num_examples)
    clipped, _ = clip_vector(update, setup.dp_clip_norm)
    cap = setup.dp_weight_cap
    return clipped, 1.0 if cap <= 0 else min(num_examples / cap, 1.0)


class SecureRound:
    """One node's walk through the SecAgg+ steps of one round."""

    def __init__(self, link: SecAggLink, round_: int, stop: threading.Event,
                 on_sent: StepHook | None = None) -> None:  # fmt: skip
        self.link, self.round, self.stop, self.on_sent = link, round_, stop, on_sent

    @property
    def node(self) -> str:
        """Id of the node taking part."""
        return self.link.link.node

    def run(self, update: Vector, num_examples: int) -> bool:
        """Take part with ``update``; True once this node's unmask answer was accepted."""
        try:
            return self._run(update, num_examples)
        except (SecAggAbort, ProtocolError, InstructionRejected) as exc:
            log.warning("node=%s round=%d: left secure aggregation: %s", self.node, self.round, exc)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise
            log.warning("node=%s round=%d: secagg refused: %s %s",
                        self.node, self.round, exc.code(), exc.details())  # fmt: skip
        return False

    def _run(self, update: Vector, num_examples: int) -> bool:
        payload = self._fetch(spb.SECAGG_ADVERTISE)
        if payload is None:
            return False
        setup = codec.parse(spb.SecAggSetup, payload)
        check_secagg_setup(setup.num_clients, setup.dim, setup.index, setup.dp_clip_norm,
                           setup.dp_weight_cap, int(np.asarray(update).size))  # fmt: skip
        try:
            config = setup_config(setup, self.link.link.run_id, self.round)
        except ConfigError as exc:
            raise InstructionRejected(f"secure round setup: {exc}") from None
        identity = Ed25519PrivateKey.generate()
        identities: dict[int, Ed25519PublicKey] = {}
        client = SecAggClient(config, setup.index, identity, identities)
        advert = spb.SecAggAdvert(
            advertise=encode(client.advertise()),
            identity_public=identity.public_key().public_bytes(*_RAW),
        )
        self._send(spb.SECAGG_ADVERTISE, advert.SerializeToString())
        x, w = weighted(setup, update, num_examples)
        for step, answer in _answers(client, identities, x, w).items():
            payload = self._fetch(step)
            if payload is None:
                return False
            self._send(step, answer(payload))
        log.info("node=%s round=%d: secure aggregation done", self.node, self.round)
        return True

    def _fetch(self, step: spb.SecAggStep) -> bytes | None:
        """The node's request for ``step``; None when it is not (or no longer) part of it."""
        while not self.stop.is_set():
            reply = self.link.fetch(self.round, step)
            if reply.status == spb.SECAGG_READY:
                return bytes(reply.payload)
            if reply.status != spb.SECAGG_WAIT:
                log.warning("node=%s round=%d: secagg step %s: %s: %s", self.node, self.round,
                            spb.SecAggStep.Name(step),
                            spb.SecAggStatus.Name(reply.status), reply.reason)  # fmt: skip
                return None
        return None

    def _send(self, step: spb.SecAggStep, payload: bytes) -> None:
        reply = self.link.send(self.round, step, payload)
        if not reply.accepted:
            raise ProtocolError(f"answer to step {step} not accepted: {reply.reason}")
        log.info("node=%s round=%d: secagg step %s sent (%d bytes)", self.node, self.round,
                 spb.SecAggStep.Name(step), len(payload))  # fmt: skip
        if self.on_sent is not None:
            self.on_sent(self.round, step)


def _directory(payload: bytes, identities: MutableMapping[int, Ed25519PublicKey]) -> KeyDirectory:
    """Learn the neighbours' identity keys, then return their advertised keys."""
    msg = codec.parse(spb.SecAggDirectory, payload)
    for entry in msg.identities:
        try:
            identities[entry.client] = Ed25519PublicKey.from_public_bytes(entry.public)
        except ValueError:
            log.warning("identity key of client %d is malformed; its keys will be rejected",
                        entry.client)  # fmt: skip
    return decode_as(msg.key_directory, KeyDirectory)


def _answers(client: SecAggClient, identities: MutableMapping[int, Ed25519PublicKey],
             update: Vector, weight: float) -> dict[spb.SecAggStep, Answer]:  # fmt: skip
    """How this node answers each request after advertising, in the order of the steps."""
    return {
        spb.SECAGG_SHARE: lambda p: encode(client.share_keys(_directory(p, identities))),
        spb.SECAGG_RECEIPT: lambda p: encode(client.receive_shares(decode_as(p, ShareDelivery))),
        spb.SECAGG_MASKED_INPUT: lambda p: encode(
            client.masked_input(decode_as(p, MaskRequest), np.asarray(update), weight)
        ),
        spb.SECAGG_UNMASK: lambda p: encode(client.unmask(decode_as(p, UnmaskRequest))),
    }
