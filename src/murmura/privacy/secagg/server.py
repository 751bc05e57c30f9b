"""The server side of SecAgg+ (Bell et al. 2020) over SecAgg (Bonawitz et al. 2017).

The server routes messages, keeps a running uint32 sum of masked inputs (O(d) memory however
many clients report) and, at the end, reconstructs exactly what it needs: the self-mask seed
of every client whose input is in the sum and the mask key of every client that dropped after
others masked with it. Before each stage closes it checks that every relevant neighbourhood
still has at least t members; if not, it raises :class:`SecAggAbort` *before* asking for or
combining any share, so an aborted round reveals nothing. Misbehaving senders (bad signature,
bundle failing authentication, malformed message) are excluded, logged and reported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Set
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from numpy.typing import NDArray

from murmura.errors import ProtocolError
from murmura.privacy.secagg import crypto, shamir
from murmura.privacy.secagg.client import MASK_PURPOSE, advertise_message, share_index
from murmura.privacy.secagg.config import SecAggConfig, Stage
from murmura.privacy.secagg.errors import SecAggAbort
from murmura.privacy.secagg.graph import neighbour_graph
from murmura.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    KeyDirectory,
    MaskedInput,
    MaskRequest,
    Message,
    RevealedShare,
    ShareDelivery,
    ShareKeys,
    ShareReceipt,
    UnmaskRequest,
    UnmaskResponse,
)

logger = logging.getLogger(__name__)
Ring = NDArray[np.unsignedinteger]


@dataclass(frozen=True, slots=True)
class SecAggResult:
    """Outcome of a round: the weighted sum and total weight, and who is in them.

    ``survivors`` are the clients whose input is in the sum; ``dropped`` started the round but
    are not in it; ``excluded`` maps misbehaving clients to the reason. ``raw_sum`` is the
    unmasked integer sum before dequantisation. The last three fields are filled in by the
    simulation driver.
    """

    weighted_sum: NDArray[np.float64]
    total_weight: float
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    excluded: Mapping[int, str]
    raw_sum: Ring
    bytes_sent: Mapping[int, int] = field(default_factory=dict)
    client_seconds: Mapping[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0


class SecAggServer:
    """The server's state for one secure aggregation round; one method per message."""

    def __init__(self, config: SecAggConfig, identities: Mapping[int, Ed25519PublicKey]) -> None:
        self.config = config
        self._identities = identities
        self._graph = neighbour_graph(config.num_clients, config.neighbours, config.graph_seed)
        self.excluded: dict[int, str] = {}
        self._keys: dict[int, AdvertiseKeys] = {}
        self._bundles: dict[int, dict[int, EncryptedShares]] = {}  # sender -> receiver -> ct
        self._sharers: frozenset[int] = frozenset()
        self._receipts: set[int] = set()
        self._active: dict[int, frozenset[int]] = {}
        self._total: Ring = np.zeros(config.length, dtype=f"<u{config.word_bytes}")
        self._inputs: set[int] = set()
        self._seed_shares: dict[int, dict[int, bytes]] = {}
        self._key_shares: dict[int, dict[int, bytes]] = {}
        self._responders: set[int] = set()

    # -- who takes part ------------------------------------------------------------------

    @property
    def advertised(self) -> tuple[int, ...]:
        """Live clients whose keys were accepted in stage 0."""
        return tuple(sorted(self._live(set(self._keys))))

    @property
    def sharers(self) -> tuple[int, ...]:
        """Live clients that shared their secrets in stage 1 (they get share deliveries)."""
        return tuple(sorted(self._live(self._sharers)))

    @property
    def maskers(self) -> tuple[int, ...]:
        """Live clients asked for a masked input in stage 2."""
        return tuple(sorted(self._live(set(self._active))))

    @property
    def survivors(self) -> tuple[int, ...]:
        """Clients whose masked input is in the sum (they get unmask requests)."""
        return tuple(sorted(self._inputs))

    # -- bookkeeping ---------------------------------------------------------------------

    def exclude(self, client: int, reason: str) -> None:
        """Treat ``client`` as dropped from now on and record why."""
        if client not in self.excluded:
            self.excluded[client] = reason
            logger.warning("server round %d: excluded client %d: %s",
                           self.config.round_, client, reason)  # fmt: skip

    def _live(self, clients: Set[int]) -> frozenset[int]:
        return frozenset(u for u in clients if u not in self.excluded)

    def _require(self, stage: Stage, holders: Mapping[int, Set[int]]) -> None:
        """Abort unless every listed client has at least t share holders left."""
        t = self.config.threshold
        short = sorted((len(h), u) for u, h in holders.items() if len(h) < t)
        if short:
            count, client = short[0]
            raise SecAggAbort(
                stage.name.lower(), self.config.round_,
                f"{len(short)} client(s) have fewer than t={t} share holders left "
                f"(client {client} has {count}, itself included); nothing was reconstructed",
            )  # fmt: skip
        logger.info("server round %d: stage %s closed with %d clients",
                    self.config.round_, stage.name.lower(), len(holders))  # fmt: skip

    def receive(self, msg: Message) -> None:
        """Dispatch a decoded client message to the handler of its stage."""
        if isinstance(msg, AdvertiseKeys):
            self.receive_advertise(msg)
        elif isinstance(msg, ShareKeys):
            self.receive_shares(msg)
        elif isinstance(msg, ShareReceipt):
            self.receive_receipt(msg)
        elif isinstance(msg, MaskedInput):
            self.receive_masked_input(msg)
        elif isinstance(msg, UnmaskResponse):
            self.receive_unmask(msg)
        else:
            raise ProtocolError(f"a server does not accept {type(msg).__name__} messages")

    # -- stage 0: advertise keys ---------------------------------------------------------

    def receive_advertise(self, msg: AdvertiseKeys) -> None:
        """Accept a client's public keys if its identity signature verifies."""
        u = msg.client
        identity = self._identities.get(u)
        if identity is None or u in self._keys:
            self.exclude(u, "unknown or duplicate client in advertise keys")
            return
        signed = advertise_message(self.config, u, msg.enc_public, msg.mask_public)
        if not crypto.verify(identity, msg.signature, signed):
            self.exclude(u, "invalid signature on advertised keys")
            return
        self._keys[u] = msg

    def close_advertise(self) -> None:
        """End stage 0: every advertiser must keep t advertising neighbours."""
        live = self._live(set(self._keys))
        self._require(Stage.ADVERTISE, {u: live & {*self._graph[u], u} for u in live})

    def key_directory(self, receiver: int) -> KeyDirectory:
        """The advertised keys of ``receiver``'s live neighbours."""
        live = self._live(set(self._keys))
        keys = tuple(self._keys[v] for v in self._graph[receiver] if v in live)
        return KeyDirectory(receiver, keys)

    # -- stage 1: share keys -------------------------------------------------------------

    def receive_shares(self, msg: ShareKeys) -> None:
        """Store a client's encrypted bundles; exclude neighbours it reports as forged."""
        u = msg.client
        if u not in self._keys or u in self._bundles or u in self.excluded:
            self.exclude(u, "share keys from a client without valid keys, or sent twice")
            return
        bundles = {b.receiver: b for b in msg.shares}
        if len(bundles) != len(msg.shares) or any(
            b.sender != u or b.receiver not in self._graph[u] for b in msg.shares
        ):
            self.exclude(u, "malformed share keys message")
            return
        self._bundles[u] = bundles
        for v in msg.rejected:
            if v in self._graph[u]:
                self.exclude(v, f"client {u} found its advertised keys invalid")

    def close_sharing(self) -> None:
        """End stage 1: every sharer must have delivered bundles to t live sharers."""
        self._sharers = self._live(set(self._bundles))
        self._require(
            Stage.SHARE, {u: self._sharers & {*self._bundles[u], u} for u in self._sharers}
        )

    def share_delivery(self, receiver: int) -> ShareDelivery:
        """The bundles addressed to ``receiver`` from live sharers."""
        live = self._live(self._sharers)
        shares = tuple(
            self._bundles[u][receiver]
            for u in self._graph[receiver]
            if u in live and receiver in self._bundles[u]
        )
        return ShareDelivery(receiver, shares)

    # -- stage 2: masked input collection ------------------------------------------------

    def receive_receipt(self, msg: ShareReceipt) -> None:
        """Record a receipt; exclude every sender whose bundle failed authentication."""
        v = msg.client
        if v not in self._sharers or v in self._receipts or v in self.excluded:
            self.exclude(v, "share receipt from a non-sharer, or sent twice")
            return
        self._receipts.add(v)
        for u in msg.rejected:
            if u in self._graph[v]:
                self.exclude(u, f"its share bundle to client {v} failed authentication")

    def close_receipts(self) -> None:
        """Fix who masks with whom: pairs that both accepted each other's bundles."""
        ready = self._live(self._receipts)
        self._active = {
            u: frozenset(
                v for v in self._graph[u]
                if v in ready and v in self._bundles[u] and u in self._bundles[v]
            )
            for u in ready
        }  # fmt: skip
        self._require(Stage.MASKED_INPUT, {u: act | {u} for u, act in self._active.items()})

    def mask_request(self, client: int) -> MaskRequest:
        """Tell ``client`` which neighbours to mask with."""
        return MaskRequest(client, tuple(sorted(self._active[client])))

    def receive_masked_input(self, msg: MaskedInput) -> None:
        """Add a masked vector to the running sum (mod 2^32, or 2^16 when quantised)."""
        u = msg.client
        if u not in self._active or u in self._inputs or u in self.excluded:
            self.exclude(u, "masked input from a client not asked for one, or sent twice")
            return
        if len(msg.masked) != self.config.word_bytes * self.config.length:
            self.exclude(u, f"masked input of {len(msg.masked)} bytes")
            return
        self._total += np.frombuffer(msg.masked, dtype=self._total.dtype)
        self._inputs.add(u)

    def _needed(self) -> tuple[frozenset[int], frozenset[int]]:
        """Clients whose seed must be rebuilt, and dropped clients whose key must be."""
        survivors = frozenset(self._inputs)
        dropped = frozenset(
            u for u, act in self._active.items() if u not in survivors and act & survivors
        )
        return survivors, dropped

    def close_inputs(self) -> None:
        """End stage 2: abort now, before any share is requested, if unmasking must fail."""
        survivors, dropped = self._needed()
        if len(survivors) < 2:
            # A "sum" over one client would be that client's input in the clear.
            reason = f"{len(survivors)} masked input(s) arrived, at least 2 needed"
            raise SecAggAbort("masked_input", self.config.round_, reason)
        self._require(
            Stage.MASKED_INPUT,
            {u: ({*self._active[u], u}) & survivors for u in survivors | dropped},
        )

    # -- stage 3: unmasking --------------------------------------------------------------

    def unmask_request(self, client: int) -> UnmaskRequest:
        """Tell a survivor which of its neighbours survived and which dropped."""
        act = self._active[client]
        survivors = tuple(sorted({*act, client} & self._inputs))
        return UnmaskRequest(client, survivors, tuple(sorted(act - self._inputs)))

    def _share_ok(self, holder: int, share: RevealedShare, survivor: bool) -> bool:
        owner = share.owner
        return (
            (owner in self._active[holder] or (owner == holder and survivor))
            and (owner in self._inputs) == survivor
            and share.index == share_index(self._graph, owner, holder)
            and len(share.share) == shamir.SHARE_BYTES
        )

    def receive_unmask(self, msg: UnmaskResponse) -> None:
        """Store a survivor's revealed shares; a malformed response counts as a dropout."""
        v = msg.client
        if v not in self._inputs or v in self._responders:
            self.exclude(v, "unmask response from a non-survivor, or sent twice")
            return
        if not all(self._share_ok(v, s, True) for s in msg.seed_shares) or not all(
            self._share_ok(v, s, False) for s in msg.key_shares
        ):
            logger.warning("server round %d: ignored malformed unmask response of client %d",
                           self.config.round_, v)  # fmt: skip
            return
        self._responders.add(v)
        for s in msg.seed_shares:
            self._seed_shares.setdefault(s.owner, {})[s.index] = s.share
        for s in msg.key_shares:
            self._key_shares.setdefault(s.owner, {})[s.index] = s.share

    def finish(self) -> SecAggResult:
        """End stage 3: check every threshold, then remove all masks and dequantise."""
        survivors, dropped = self._needed()
        seed_holders = {u: set(self._seed_shares.get(u, {})) for u in survivors}
        key_holders = {u: set(self._key_shares.get(u, {})) for u in dropped}
        self._require(Stage.UNMASK, seed_holders | key_holders)
        total = self._total.copy()
        t, length, word = self.config.threshold, self.config.length, self.config.word_bytes
        for u in sorted(survivors):
            total -= crypto.prg(shamir.combine(self._seed_shares[u], t), length, word)
        for u in sorted(dropped):
            self._remove_pair_masks(total, u, shamir.combine(self._key_shares[u], t), survivors)
        weighted_sum, total_weight = self.config.quantizer().decode(total)
        gone = set(range(self.config.num_clients)) - survivors
        return SecAggResult(
            weighted_sum, total_weight, tuple(sorted(survivors)),
            tuple(sorted(gone)), dict(self.excluded), total,
        )  # fmt: skip

    def _remove_pair_masks(
        self, total: Ring, dropped: int, key_seed: bytes, survivors: frozenset[int]
    ) -> None:
        """Cancel the masks survivors added for a neighbour that dropped before sending input."""
        key = crypto.mask_key_from_seed(key_seed, self.config.binding())
        if crypto.public_bytes(key) != self._keys[dropped].mask_public:
            raise SecAggAbort("unmask", self.config.round_,
                              f"rebuilt mask key of client {dropped} does not match its "
                              "advertised key: a revealed share was corrupted")  # fmt: skip
        for v in sorted(self._active[dropped] & survivors):
            binding = self.config.binding() + crypto.pair_id(dropped, v)
            seed = crypto.agree(key, self._keys[v].mask_public, MASK_PURPOSE, binding)
            mask = crypto.prg(seed, self.config.length, self.config.word_bytes)
            # v added +mask if v < dropped, -mask otherwise; undo it.
            if v < dropped:
                total -= mask
            else:
                total += mask
