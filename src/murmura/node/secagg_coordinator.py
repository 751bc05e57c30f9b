"""The coordinator's side of a secure aggregation round over gRPC: the SecAgg+ server stages.

The round's cohort gets the FIT instruction with ``secagg = true``; each worker trains, keeps
its update and walks the steps of ``proto/secagg.proto``. The driver opens one step at a time
with every remaining node's request (``SecAggServer``'s key directory, share delivery, mask
and unmask requests), waits until all have answered, the missing ones are lost or the step's
deadline passes (a node that misses it is a dropout from then on), and closes the stage on the
server, which aborts below threshold before anything is reconstructed. The advertise step's
deadline is the round timeout (it includes local training); the others have
``stage_timeout_s``. The FIT round itself closes with the advertise step, so a node that has
not advertised by then is not sent the model again.

SecAgg index ``u`` is the ``u``-th node of the sorted cohort, and every answer must come from
the certificate of the node with that index. No answer may be larger than ``answer_limit``
(the masked input plus a margin) unless the server options set ``max_secagg_bytes``; a node
whose answer the transport refused (too large, truncated, wrong digest) is excluded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from murmura.errors import ConfigError, ProtocolError
from murmura.privacy.secagg import SecAggAbort, SecAggConfig, SecAggResult, SecAggServer
from murmura.privacy.secagg.messages import (
    AdvertiseKeys,
    ClientMessage,
    MaskedInput,
    ShareKeys,
    ShareReceipt,
    UnmaskResponse,
    decode_as,
    encode,
    masked_input_size,
)
from murmura.seeding import derive_seed
from murmura.strategy.secure import SecureAggregation
from murmura.transport import codec
from murmura.transport.hub import Hub, Outgoing, Refused
from murmura.transport.proto import secagg_pb2 as spb
from murmura.transport.secagg_exchange import SecAggExchange
from murmura.transport.streams import DecodedResult

log = logging.getLogger(__name__)

_GRAPH = 0x6A4F  # stream of the public neighbour graph per (seed, round)
ANSWER_MARGIN = 64 << 10
PER_NEIGHBOUR = 1 << 10
"""Answer bytes allowed per neighbour: share bundles and revealed shares take under 100 B each."""
_KINDS: Mapping[int, type[ClientMessage]] = {
    spb.SECAGG_SHARE: ShareKeys,
    spb.SECAGG_RECEIPT: ShareReceipt,
    spb.SECAGG_MASKED_INPUT: MaskedInput,
    spb.SECAGG_UNMASK: UnmaskResponse,
}


@dataclass(frozen=True, slots=True)
class SecureTiming:
    """Deadlines of a secure round's steps."""

    advertise_s: float = 60.0
    stage_s: float = 30.0


def secagg_config(strategy: SecureAggregation, run_id: str, round_: int, n: int,
                  dim: int) -> SecAggConfig:  # fmt: skip
    """The public parameters of round ``round_`` for a cohort of ``n`` (as in simulation)."""
    p = strategy.params
    if p.max_weight is None:
        raise ConfigError("secure aggregation over gRPC needs secagg.max_weight fixed in advance")
    k, t = p.graph(n)
    return SecAggConfig(
        num_clients=n, dim=dim, neighbours=k, threshold=t, clip=p.clip,
        max_weight=1.0 if strategy.clip is not None else p.max_weight, round_=round_,
        graph_seed=derive_seed(p.seed, round_, _GRAPH), rounding=p.rounding,
        context=run_id.encode(), level_bits=p.level_bits,
    )  # fmt: skip


def answer_limit(config: SecAggConfig) -> int:
    """The largest answer a node may send in a round: its masked input plus a small margin."""
    masked = masked_input_size(config.length, config.word_bytes)
    return masked + ANSWER_MARGIN + PER_NEIGHBOUR * config.neighbours


class _ServerSide:
    """The SecAgg+ server of one round, fed by the exchange with node-bound answers."""

    def __init__(self, config: SecAggConfig, cohort: list[str]) -> None:
        self.cohort = cohort
        self.index = {node: u for u, node in enumerate(cohort)}
        self.identities: dict[int, Ed25519PublicKey] = {}
        self.server = SecAggServer(config, self.identities)
        self.reasons: dict[int, str] = {}

    def receive(self, node: str, step: int, payload: bytes) -> None:
        """Decode, check that the message speaks for ``node``'s index, hand it to the server."""
        u = self.index[node]
        try:
            msg = self._decode(u, step, payload)
        except ProtocolError as exc:
            self.server.exclude(u, f"malformed answer at step {step}: {exc}")
            raise Refused("INVALID_ARGUMENT", f"{type(exc).__name__}: {exc}") from None
        if msg.client != u:
            raise Refused("PERMISSION_DENIED", f"message of client {msg.client}, node is {u}")
        self.server.receive(msg)

    def _decode(self, u: int, step: int, payload: bytes) -> ClientMessage:
        if step != spb.SECAGG_ADVERTISE:
            return decode_as(payload, _KINDS[step])
        advert = codec.parse(spb.SecAggAdvert, payload)
        try:
            key = Ed25519PublicKey.from_public_bytes(advert.identity_public)
        except ValueError:
            raise ProtocolError("identity key is not a raw Ed25519 public key") from None
        msg = decode_as(advert.advertise, AdvertiseKeys)
        if msg.client == u:  # bound to this certificate's node: its keys are signed with this
            self.identities.setdefault(u, key)
        return msg

    def setup(self, u: int, strategy: SecureAggregation) -> bytes:
        """The ADVERTISE request of index ``u``: public parameters and its place in the cohort."""
        c, dp = self.server.config, strategy.clip
        setup = spb.SecAggSetup(
            num_clients=c.num_clients, dim=c.dim, neighbours=c.neighbours,
            threshold=c.threshold, clip=c.clip, max_weight=c.max_weight,
            graph_seed=c.graph_seed, rounding=c.rounding, cohort=self.cohort, index=u,
            dp_clip_norm=dp.clip_norm if dp is not None else 0.0,
            dp_weight_cap=(dp.weight_cap or 0.0) if dp is not None else 0.0,
            level_bits=c.level_bits or 0,
        ).SerializeToString()  # fmt: skip
        return bytes(setup)

    def directory(self, u: int) -> bytes:
        """The SHARE request of index ``u``: its neighbours' keys and identity keys."""
        keys = self.server.key_directory(u)
        ids = [spb.SecAggIdentity(client=e.client, public=_raw(self.identities[e.client]))
               for e in keys.keys]  # fmt: skip
        msg = spb.SecAggDirectory(key_directory=encode(keys), identities=ids)
        return bytes(msg.SerializeToString())


def _raw(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization as s

    return key.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw)


def _refuse_plaintext(node: str, round_: int, res: DecodedResult) -> None:
    raise ValueError("a plaintext update in a secure aggregation round")


class SecureRounds:
    """Drives the SecAgg+ server stages of the coordinator's rounds over the exchange."""

    def __init__(self, strategy: SecureAggregation, hub: Hub, exchange: SecAggExchange,
                 timing: SecureTiming) -> None:  # fmt: skip
        self.strategy, self.hub, self.exchange, self.timing = strategy, hub, exchange, timing
        if strategy.params.dropout:
            log.warning("node=coordinator round=-: secagg.dropout simulates dropouts in "
                        "simulation only; a deployment has real ones")  # fmt: skip

    async def run(
        self, outgoing: Outgoing, cohort: list[str], dim: int
    ) -> SecAggResult | SecAggAbort:
        """Send ``outgoing`` (FIT) to ``cohort`` and run the stages; the result or the abort.

        ``cohort[u]`` is the node of SecAgg index ``u``.
        """
        round_ = outgoing.round
        if len(cohort) < 2:
            return SecAggAbort("advertise", round_, f"{len(cohort)} node(s) sampled, 2 needed")
        config = secagg_config(self.strategy, self.exchange.run_id, round_, len(cohort), dim)
        side = _ServerSide(config, cohort)
        await self.exchange.begin(round_, frozenset(cohort), side.receive, answer_limit(config))
        await self.hub.open_round(outgoing, frozenset(cohort), _refuse_plaintext)
        try:
            result = await self._stages(side, round_)
        except SecAggAbort as exc:
            log.error("node=coordinator round=%d: %s; model unchanged", round_, exc)
            await self.exchange.end(f"aborted: {exc.reason}")
            return exc
        finally:
            if self.hub.current is not None:  # an error before the advertise step closed
                await self.hub.collect(0)
        await self.exchange.end("done")
        excluded = {**side.reasons, **result.excluded}
        return replace(result, excluded=excluded)

    async def _stages(self, side: _ServerSide, round_: int) -> SecAggResult:
        s, t = side.server, self.timing
        setups = {u: side.setup(u, self.strategy) for u in range(len(side.cohort))}
        await self._step(side, round_, spb.SECAGG_ADVERTISE, setups, t.advertise_s)
        await self.hub.collect(0)  # the FIT round ends with the advertise step
        s.close_advertise()
        await self._step(side, round_, spb.SECAGG_SHARE,
                         {u: side.directory(u) for u in s.advertised}, t.stage_s)  # fmt: skip
        s.close_sharing()
        deliveries = {u: encode(s.share_delivery(u)) for u in s.sharers}
        await self._step(side, round_, spb.SECAGG_RECEIPT, deliveries, t.stage_s)
        s.close_receipts()
        await self._step(side, round_, spb.SECAGG_MASKED_INPUT,
                         {u: encode(s.mask_request(u)) for u in s.maskers}, t.stage_s)  # fmt: skip
        s.close_inputs()
        unmasks = {u: encode(s.unmask_request(u)) for u in s.survivors}
        await self._step(side, round_, spb.SECAGG_UNMASK, unmasks, t.stage_s)
        result = await asyncio.to_thread(s.finish)
        log.info("node=coordinator round=%d: secure aggregation done: %d inputs in the sum",
                 round_, len(result.survivors))  # fmt: skip
        return result

    async def _step(self, side: _ServerSide, round_: int, step: spb.SecAggStep,
                    requests: Mapping[int, bytes], timeout_s: float) -> None:  # fmt: skip
        """Open ``step`` with ``requests`` by SecAgg index, wait for the answers, close it."""
        by_node = {side.cohort[u]: payload for u, payload in requests.items()}
        name = spb.SecAggStep.Name(step)
        await self.exchange.open_step(step, by_node)
        alive: Callable[[], list[str]] = self.hub.alive
        missing = await self.exchange.wait_step(step, timeout_s, alive)
        for node, why in sorted(self.exchange.refusals(step).items()):
            side.server.exclude(side.index[node], f"{name} answer refused: {why}")
        for node in sorted(missing):
            side.reasons.setdefault(side.index[node], f"no {name} answer before the deadline")
            log.warning("node=%s round=%d: no %s answer: a dropout from here on",
                        node, round_, name)  # fmt: skip
        log.info("node=coordinator round=%d: %s closed, %d of %d answered",
                 round_, name, len(by_node) - len(missing), len(by_node))  # fmt: skip
