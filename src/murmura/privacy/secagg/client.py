"""The client side of SecAgg+ (Bell et al. 2020) over SecAgg (Bonawitz et al. 2017).

One :class:`SecAggClient` lives for one round. Each method answers one server request, so
the same object runs in memory (see ``simulation.py``) or behind a transport. A client never
reveals both its share of a neighbour's self-mask seed and its share of that neighbour's mask
key, and never reveals anything twice: that is what keeps a single input hidden even from a
server that sees every message.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from murmura.errors import ProtocolError
from murmura.privacy.secagg import crypto, shamir
from murmura.privacy.secagg.config import SecAggConfig, Stage
from murmura.privacy.secagg.errors import SecAggAbort
from murmura.privacy.secagg.graph import neighbour_graph
from murmura.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    RevealedShare,
    ShareDelivery,
    ShareKeys,
    ShareReceipt,
    UnmaskRequest,
    UnmaskResponse,
)

logger = logging.getLogger(__name__)

ENC_PURPOSE = b"murmura-secagg enc|"
MASK_PURPOSE = b"murmura-secagg mask|"
_BUNDLE_HEAD = struct.Struct("<III")


def advertise_message(config: SecAggConfig, client: int, enc: bytes, mask: bytes) -> bytes:
    """Bytes a client signs in stage 0: round binding, its id and both public keys."""
    return b"advertise|" + config.binding() + client.to_bytes(4, "little") + enc + mask


def share_associated_data(config: SecAggConfig, sender: int, receiver: int) -> bytes:
    """AES-GCM associated data of a share bundle: round binding, sender, receiver (ordered)."""
    return config.binding() + sender.to_bytes(4, "little") + receiver.to_bytes(4, "little")


def share_index(graph: Mapping[int, tuple[int, ...]], owner: int, holder: int) -> int:
    """Shamir evaluation point of ``holder`` (a neighbour of ``owner``, or ``owner`` itself).

    Points are 1 + the position in the sorted closed neighbourhood, so both ends of a pair,
    and the server, agree on them without sending them.
    """
    return sorted((*graph[owner], owner)).index(holder) + 1


@dataclass(frozen=True, slots=True)
class _Held:
    """Shares a neighbour gave this client: its seed share and its mask-key share."""

    index: int
    seed_share: bytes
    key_share: bytes


class SecAggClient:
    """One client's state and replies for one secure aggregation round."""

    def __init__(
        self,
        config: SecAggConfig,
        client_id: int,
        identity: Ed25519PrivateKey,
        identities: Mapping[int, Ed25519PublicKey],
    ) -> None:
        if not 0 <= client_id < config.num_clients:
            raise ValueError(f"client id {client_id} outside 0..{config.num_clients - 1}")
        self.config = config
        self.id = client_id
        self._identity = identity
        self._identities = identities
        graph = neighbour_graph(config.num_clients, config.neighbours, config.graph_seed)
        self.neighbours = graph[client_id]
        self._graph = graph
        self._enc_key = X25519PrivateKey.generate()
        self._mask_seed = os.urandom(shamir.SECRET_BYTES)
        self._mask_key = crypto.mask_key_from_seed(self._mask_seed, config.binding())
        self._seed = os.urandom(shamir.SECRET_BYTES)
        self._peers: dict[int, AdvertiseKeys] = {}
        self._shared_with: frozenset[int] = frozenset()
        self._held: dict[int, _Held] = {}
        self._masked_with: tuple[int, ...] | None = None
        self._revealed = False

    def _abort(self, stage: Stage, reason: str) -> SecAggAbort:
        logger.warning("client %d round %d: abort: %s", self.id, self.config.round_, reason)
        return SecAggAbort(stage.name.lower(), self.config.round_, reason)

    def _expect(self, receiver: int, kind: str) -> None:
        if receiver != self.id:
            raise ProtocolError(f"client {self.id} got a {kind} addressed to client {receiver}")

    def advertise(self) -> AdvertiseKeys:
        """Stage 0: publish both X25519 public keys, signed with the identity key."""
        enc, mask = crypto.public_bytes(self._enc_key), crypto.public_bytes(self._mask_key)
        signature = crypto.sign(self._identity, advertise_message(self.config, self.id, enc, mask))
        return AdvertiseKeys(self.id, enc, mask, signature)

    def _valid_key(self, entry: AdvertiseKeys) -> bool:
        identity = self._identities.get(entry.client)
        if identity is None or entry.client not in self.neighbours or entry.client in self._peers:
            return False
        if len(entry.enc_public) != crypto.KEY_BYTES or len(entry.mask_public) != crypto.KEY_BYTES:
            return False
        message = advertise_message(self.config, entry.client, entry.enc_public, entry.mask_public)
        return crypto.verify(identity, entry.signature, message)

    def share_keys(self, directory: KeyDirectory) -> ShareKeys:
        """Stage 1: check neighbours' signatures, then send each valid one an encrypted bundle.

        A neighbour whose signature fails gets nothing and is reported in ``rejected``.
        """
        self._expect(directory.receiver, "key directory")
        rejected = []
        for entry in directory.keys:
            if self._valid_key(entry):
                self._peers[entry.client] = entry
            else:
                rejected.append(entry.client)
                logger.warning(
                    "client %d round %d: rejected keys of %d (bad signature or not a neighbour)",
                    self.id, self.config.round_, entry.client,
                )  # fmt: skip
        t, k = self.config.threshold, len(self.neighbours)
        if len(self._peers) + 1 < t:
            raise self._abort(Stage.SHARE, f"{len(self._peers)} valid neighbours, threshold {t}")
        seed_shares = shamir.split(self._seed, t, k + 1)
        key_shares = shamir.split(self._mask_seed, t, k + 1)
        own = share_index(self._graph, self.id, self.id)
        self._held[self.id] = _Held(own, seed_shares[own], key_shares[own])
        bundles = []
        for v in sorted(self._peers):
            idx = share_index(self._graph, self.id, v)
            plain = _BUNDLE_HEAD.pack(self.id, v, idx) + seed_shares[idx] + key_shares[idx]
            key = self._pair_key(v)
            aad = share_associated_data(self.config, self.id, v)
            bundles.append(EncryptedShares(self.id, v, crypto.encrypt(key, plain, aad)))
        self._shared_with = frozenset(self._peers)
        return ShareKeys(self.id, tuple(bundles), tuple(sorted(rejected)))

    def _pair_key(self, peer: int) -> bytes:
        binding = self.config.binding() + crypto.pair_id(self.id, peer)
        return crypto.agree(self._enc_key, self._peers[peer].enc_public, ENC_PURPOSE, binding)

    def _open(self, bundle: EncryptedShares) -> _Held | None:
        u = bundle.sender
        if bundle.receiver != self.id or u not in self._shared_with or u in self._held:
            return None
        aad = share_associated_data(self.config, u, self.id)
        plain = crypto.decrypt(self._pair_key(u), bundle.ciphertext, aad)
        expected_len = _BUNDLE_HEAD.size + 2 * shamir.SHARE_BYTES
        if plain is None or len(plain) != expected_len:
            return None
        sender, receiver, idx = _BUNDLE_HEAD.unpack_from(plain)
        if (sender, receiver, idx) != (u, self.id, share_index(self._graph, u, self.id)):
            return None
        body = plain[_BUNDLE_HEAD.size :]
        return _Held(idx, body[: shamir.SHARE_BYTES], body[shamir.SHARE_BYTES :])

    def receive_shares(self, delivery: ShareDelivery) -> ShareReceipt:
        """Stage 2a: decrypt the bundles addressed here; report senders whose bundle fails."""
        self._expect(delivery.receiver, "share delivery")
        rejected = []
        for bundle in delivery.shares:
            held = self._open(bundle)
            if held is None:
                rejected.append(bundle.sender)
                logger.warning(
                    "client %d round %d: share bundle from %d failed authentication",
                    self.id, self.config.round_, bundle.sender,
                )  # fmt: skip
            else:
                self._held[bundle.sender] = held
        return ShareReceipt(self.id, tuple(sorted(set(rejected))))

    def masked_input(self, request: MaskRequest, update: NDArray[np.floating], weight: float,
                     rng: np.random.Generator | None = None) -> MaskedInput:  # fmt: skip
        """Stage 2b: ``q(w * update, w) + PRG(b_u) + sum_v +-PRG(s_uv)`` in the config's ring.

        ``active`` must be neighbours whose bundles this client accepted; the pairwise mask is
        added when this client's id is the smaller of the pair and subtracted otherwise, so the
        masks of two surviving neighbours cancel in the sum.
        """
        self._expect(request.receiver, "mask request")
        if self._masked_with is not None:
            raise ProtocolError(f"client {self.id} asked twice for its masked input")
        active = tuple(sorted(set(request.active)))
        if self.id in active or not set(active) <= set(self._held):
            raise self._abort(Stage.MASKED_INPUT, "asked to mask with a neighbour without shares")
        if len(active) + 1 < self.config.threshold:
            raise self._abort(Stage.MASKED_INPUT, f"only {len(active)} active neighbours")
        if np.shape(update) != (self.config.dim,):
            raise ValueError(f"update has shape {np.shape(update)}, expected ({self.config.dim},)")
        quantizer = self.config.quantizer()
        if quantizer.stochastic and rng is None:
            rng = np.random.default_rng()
        total = quantizer.encode(update, weight, rng)
        length, word = self.config.length, self.config.word_bytes
        total += crypto.prg(self._seed, length, word)
        for v in active:
            binding = self.config.binding() + crypto.pair_id(self.id, v)
            seed = crypto.agree(self._mask_key, self._peers[v].mask_public, MASK_PURPOSE, binding)
            if self.id < v:
                total += crypto.prg(seed, length, word)
            else:
                total -= crypto.prg(seed, length, word)
        self._masked_with = active
        return MaskedInput(self.id, total.astype(f"<u{word}", copy=False).tobytes())

    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Stage 3: seed shares of survivors (itself included), key shares of dropped ones, once."""
        self._expect(request.receiver, "unmask request")
        if self._masked_with is None or self._revealed:
            raise ProtocolError(f"client {self.id} got an unmask request out of order")
        survivors, dropped = set(request.survivors), set(request.dropped)
        allowed = {*self._masked_with, self.id}
        if survivors & dropped or self.id not in survivors or not survivors | dropped <= allowed:
            raise self._abort(Stage.UNMASK, "survivor and dropout lists are inconsistent")
        if len(survivors) < self.config.threshold:
            raise self._abort(Stage.UNMASK, f"only {len(survivors)} surviving neighbours")
        self._revealed = True
        h = self._held
        seeds = tuple(RevealedShare(u, h[u].index, h[u].seed_share) for u in sorted(survivors))
        keys = tuple(RevealedShare(u, h[u].index, h[u].key_share) for u in sorted(dropped))
        return UnmaskResponse(self.id, seeds, keys)
