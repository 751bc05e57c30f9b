"""Peer-to-peer model exchange over gRPC (``murmura.v1.Peer``, see ``proto/peer.proto``).

Each peer publishes the model it sends in a round into a ``ModelStore`` and serves it with
``GetModel``; its neighbours dial it with a ``NeighbourLink`` and ask for a given round
(long-poll). Identities are the same mTLS certificates as the coordinator's: the caller is
its certificate's common name and must be on the serving peer's allowlist (its neighbours);
the dialer checks, before its first call and after the neighbour was unreachable, that the
certificate it reaches is a worker certificate with the neighbour's name
(``dial_check.neighbour_identity``), and its channel is pinned to that name. Every call
has a deadline and every reply is decoded by the codec, so a hung, dead or lying neighbour
costs at most one deadline and never a model that fails its binding, layout or digest.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from grpc import aio

from murmura.compress.base import Codec
from murmura.errors import ConfigError, ProtocolError
from murmura.transport import codec, dial_check, keys
from murmura.transport.codec import BlobAssembler, MalformedMessage
from murmura.transport.frames import parse_chunk_frame
from murmura.transport.grpc_client import LinkOptions, channel_options
from murmura.transport.grpc_server import (
    NODE_HEADER,
    ServerOptions,
    is_loopback,
    server_channel_options,
)
from murmura.transport.proto import peer_pb2 as ppb
from murmura.types import Layout, Vector

log = logging.getLogger(__name__)

PEER_SERVICE = "murmura.v1.Peer"
GET_MODEL = f"/{PEER_SERVICE}/GetModel"


class ModelStore:
    """The models a peer has sent in its most recent rounds, encoded once each."""

    def __init__(self, run_id: str, node: str, layout: Layout, keep: int = 3) -> None:
        self.run_id, self.node, self.layout, self.keep = run_id, node, layout, keep
        self.latest = 0
        self.blobs: dict[int, codec.Blob] = {}
        self.copies: dict[int, codec.Blob] = {}
        """CHOCO-gossip: the public copy after each round's ``q_i`` (a neighbour's resync)."""
        self.fetched: dict[str, int] = {}
        """Newest round each neighbour fetched from us (to know when we may leave)."""
        self._changed = asyncio.Condition()

    async def publish(self, round_: int, weights: Vector) -> None:
        """Make ``weights`` the model served for ``round_``."""
        await self.publish_blob(round_, codec.encode_blob(weights, self.layout))

    async def publish_compressed(
        self, round_: int, wire: bytes, codec_spec: str, copy: Vector
    ) -> None:
        """Serve a codec's framed bytes (CHOCO-gossip's ``q_i``) for ``round_``.

        ``copy`` (the public copy ``q_i`` made) is served instead to a neighbour that asks
        for it to resync.
        """
        blob = codec.compressed_blob(wire, codec_spec, self.layout)
        blob.header.sha256 = hashlib.sha256(wire).digest()
        self.copies[round_] = codec.encode_blob(np.array(copy, dtype=np.float32), self.layout)
        await self.publish_blob(round_, blob)

    async def publish_blob(self, round_: int, blob: codec.Blob) -> None:
        """Make ``blob`` what is served for ``round_``; forget rounds beyond ``keep``."""
        async with self._changed:
            self.blobs[round_] = blob
            self.latest = max(self.latest, round_)
            for old in [r for r in self.blobs if r <= self.latest - self.keep]:
                del self.blobs[old]
                self.copies.pop(old, None)
            self._changed.notify_all()

    async def wait_for(self, round_: int, wait_s: float, copy: bool = False) -> codec.Blob | None:
        """The model of ``round_`` once published, within ``wait_s``; None if not (any more).

        ``copy``: CHOCO-gossip's public copy of that round instead (None without CHOCO).
        """
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while self.latest < round_:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    async with asyncio.timeout(left):  # not wait_for: see Hub.next_instruction
                        await self._changed.wait()
                except TimeoutError:
                    return None
            return (self.copies if copy else self.blobs).get(round_)

    async def note_fetched(self, node: str, round_: int) -> None:
        """Record that ``node`` received our model of ``round_``."""
        async with self._changed:
            self.fetched[node] = max(self.fetched.get(node, 0), round_)
            self._changed.notify_all()

    async def wait_fetched(self, nodes: set[str], round_: int, wait_s: float) -> set[str]:
        """Wait until every one of ``nodes`` fetched ``round_`` or ``wait_s`` passed; the rest."""
        deadline = time.monotonic() + wait_s
        async with self._changed:
            while True:
                missing = {n for n in nodes if self.fetched.get(n, 0) < round_}
                left = deadline - time.monotonic()
                if not missing or left <= 0:
                    return missing
                try:
                    async with asyncio.timeout(left):  # not wait_for: see Hub.next_instruction
                        await self._changed.wait()
                except TimeoutError:
                    return {n for n in nodes if self.fetched.get(n, 0) < round_}


class PeerService:
    """``GetModel``: authenticate the caller, check the binding, long-poll, stream the model."""

    def __init__(self, store: ModelStore, opts: ServerOptions) -> None:
        self.store, self.opts = store, opts

    async def _identify(self, context: aio.ServicerContext[Any, Any]) -> str:
        if self.opts.credentials is None:
            md = dict(context.invocation_metadata() or ())
            name, role = str(md.get(NODE_HEADER, "")), "worker"
        else:
            pems = context.auth_context().get("x509_pem_cert") or []
            if not pems:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, "no client certificate")
            name, role = keys.identity_of(bytes(pems[0]))
        reason = None
        if not name:
            reason = "has no node id"
        elif role != "worker":
            reason = f"has certificate role {role!r}, not 'worker'"
        elif self.opts.allowlist is not None and name not in self.opts.allowlist:
            reason = "is not a neighbour"
        if reason is not None:
            log.warning(
                "node=%s round=%d: refused %r: %s", self.store.node, self.store.latest, name, reason
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"node {name!r} {reason}")
        return name

    async def _request(self, raw: bytes, caller: str, context: Any) -> ppb.ModelRequest:
        try:
            req = codec.parse(ppb.ModelRequest, raw)
            codec.check_version(req.version)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")
        if req.node != caller:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"claims node {req.node!r}, certificate says {caller!r}",
            )
        if req.run_id != self.store.run_id:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"run {req.run_id!r} is not this run"
            )
        return req

    async def get_model(
        self, raw: bytes, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Stream our model of the asked round, or a header saying it is not available."""
        caller = await self._identify(context)
        req = await self._request(raw, caller, context)
        wait = min(req.wait_ms / 1000, self.opts.max_wait_s)
        blob = await self.store.wait_for(int(req.round), wait, req.public_copy)
        header = ppb.ModelHeader(
            version=codec.PROTOCOL_VERSION,
            run_id=self.store.run_id,
            round=req.round,
            node=self.store.node,
            available=blob is not None,
            latest_round=self.store.latest,
        )
        if blob is None:
            yield ppb.ModelPart(header=header).SerializeToString()
            return
        header.weights.CopyFrom(blob.header)
        yield ppb.ModelPart(header=header).SerializeToString()
        for frame in blob.frames(self.opts.chunk_size):
            yield frame
        await self.store.note_fetched(caller, int(req.round))
        log.debug("node=%s round=%d: model sent to %s", self.store.node, req.round, caller)


async def start_peer_server(store: ModelStore, opts: ServerOptions) -> tuple[aio.Server, int]:
    """Serve ``store`` on ``opts.host:opts.port`` (mTLS unless explicitly insecure on loopback)."""
    svc = PeerService(store, opts)
    handler = grpc.method_handlers_generic_handler(
        PEER_SERVICE, {"GetModel": grpc.unary_stream_rpc_method_handler(svc.get_model)}
    )
    server = aio.server(options=server_channel_options(opts))
    server.add_generic_rpc_handlers((handler,))
    address = f"{opts.host}:{opts.port}"
    if opts.credentials is None:
        if not (opts.insecure and is_loopback(opts.host)):
            raise ConfigError(f"refusing to serve peers on {opts.host} without TLS")
        log.warning("node=%s round=-: INSECURE peer endpoint (no TLS)", store.node)
        port = server.add_insecure_port(address)
    else:
        c = opts.credentials
        creds = grpc.ssl_server_credentials(
            [(c.key, c.cert)], root_certificates=c.ca, require_client_auth=True
        )
        port = server.add_secure_port(address, creds)
    await server.start()
    log.info("node=%s round=%d: serving peers on %s:%d", store.node, store.latest, opts.host, port)
    return server, port


@dataclass(frozen=True, slots=True)
class Fetched:
    """A neighbour's answer for one round: its model, or the newest round it has.

    With CHOCO-gossip ``weights`` is the neighbour's decoded difference ``q_j``.
    """

    node: str
    round: int
    latest_round: int
    weights: Vector | None
    wire_bytes: int = 0
    """Length of the buffer that carried ``weights`` (0 when none came)."""


class NeighbourLink:
    """One neighbour, dialled over mTLS; its certificate must carry the neighbour's name."""

    def __init__(
        self,
        me: str,
        neighbour: str,
        target: str,
        run_id: str,
        layout: Layout,
        credentials: keys.Credentials | None,
        max_model_bytes: int = codec.DEFAULT_MAX_BYTES,
        compression: Codec | None = None,
    ) -> None:
        self.me, self.neighbour, self.target, self.run_id = me, neighbour, target, run_id
        self.layout, self.max_model_bytes = layout, max_model_bytes
        self.compression = compression
        """The codec agreed for the neighbour's replies (CHOCO-gossip); None: float32 models."""
        link = LinkOptions(server_name=neighbour if credentials is not None else None)
        options = [
            *channel_options(link),
            # A restarted neighbour must be reachable again within a round, not minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._credentials = credentials
        self.verified = credentials is None
        """Whether the node at ``target`` proved to hold the neighbour's worker certificate."""
        if credentials is None:
            if not is_loopback(target.rsplit(":", 1)[0]):
                raise ConfigError(f"refusing an insecure link to {target} (loopback only)")
            self._metadata = ((NODE_HEADER, me),)
            self.channel = aio.insecure_channel(target, options)
        else:
            creds = grpc.ssl_channel_credentials(credentials.ca, credentials.key, credentials.cert)
            self.channel = aio.secure_channel(target, creds, options)
        self._get = self.channel.unary_stream(GET_MODEL)

    async def check(self, timeout_s: float) -> None:
        """Check the certificate at ``target`` once: the neighbour's name and role ``worker``.

        Raises ``IdentityError`` (a foreign role or name) or ``dial_check.Unreachable``.
        """
        if self.verified or self._credentials is None:
            return
        await asyncio.to_thread(
            dial_check.neighbour_identity,
            self.target,
            self._credentials,
            self.neighbour,
            max(timeout_s, 0.1),
        )
        self.verified = True

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def fetch(self, round_: int, wait_s: float, copy: bool = False) -> Fetched:
        """Ask for the neighbour's model of ``round_``; the call ends within ``wait_s`` + 1 s.

        ``copy``: its CHOCO-gossip public copy of that round, float32 (a resync).
        """
        req = ppb.ModelRequest(
            version=codec.PROTOCOL_VERSION,
            run_id=self.run_id,
            node=self.me,
            round=round_,
            wait_ms=max(int(wait_s * 1000), 0),
            public_copy=copy,
        ).SerializeToString()
        await self.check(wait_s + 1.0)
        call = self._get(req, timeout=wait_s + 1.0, metadata=self._metadata)
        return await self._decode(round_, aiter(call), None if copy else self.compression)

    async def _decode(
        self, round_: int, parts: AsyncIterator[Any], agreed: Codec | None
    ) -> Fetched:
        first = await anext(parts, None)
        if first is None:
            raise MalformedMessage("empty model stream")
        part = codec.parse(ppb.ModelPart, bytes(first))
        if part.WhichOneof("part") != "header":
            raise MalformedMessage("a model stream must start with a header")
        h = part.header
        codec.check_version(h.version)
        if h.run_id != self.run_id or h.node != self.neighbour or h.round != round_:
            raise ProtocolError(
                f"reply bound to ({h.run_id!r}, round {h.round}, {h.node!r}), expected "
                f"({self.run_id!r}, round {round_}, {self.neighbour!r})"
            )
        if h.available != h.HasField("weights"):
            raise MalformedMessage("a model reply has weights if and only if it is available")
        weights = None
        if h.available:
            blob = BlobAssembler(h.weights, self.max_model_bytes, self.layout, codec=agreed)
            async for raw in parts:
                fast = parse_chunk_frame(bytes(raw))
                if fast is not None:
                    blob.add_bytes(*fast)
                    continue
                chunk = codec.parse(ppb.ModelPart, bytes(raw))
                if chunk.WhichOneof("part") != "chunk":
                    raise MalformedMessage("only chunks may follow the header")
                blob.add(chunk.chunk)
            weights = blob.finish()
        size = int(h.weights.length) if weights is not None else 0
        return Fetched(self.neighbour, round_, int(h.latest_round), weights, size)
