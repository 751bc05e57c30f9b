"""The coordinator's gRPC endpoint (``grpc.aio``) with mTLS and peer-certificate identity.

An allowlist is checked before any model byte; the handlers feed a ``Hub`` and report joins,
refusals and models sent to its ``Events`` callback (the coordinator's audit ledger). An update
must be signed with the key of the certificate that sent it (``update_auth``).

Requests arrive as raw bytes and are decoded by ``murmura.transport.codec``, so malformed input
becomes a typed ``ProtocolError`` -> INVALID_ARGUMENT (RESOURCE_EXHAUSTED for size limits,
UNAUTHENTICATED for a missing or bad update signature) and the server keeps serving everyone
else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio

from murmura.compress.base import Codec
from murmura.errors import ConfigError, ProtocolError, SignatureError
from murmura.transport import codec, keys
from murmura.transport.hub import Hub, Outgoing, Refused
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult, ResultReader, instruction_frames
from murmura.transport.update_auth import PeerCertificate, UpdateAuthenticator, peer_certificate
from murmura.types import Scalar

log = logging.getLogger(__name__)

SERVICE = "murmura.v1.Coordinator"
NODE_HEADER = "x-murmura-node"


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where and how the coordinator listens."""

    host: str = "127.0.0.1"
    port: int = 0
    credentials: keys.Credentials | None = None
    """None means insecure, which is allowed only with ``insecure=True`` on a loopback host."""
    insecure: bool = False
    allowlist: frozenset[str] | None = None
    """Node ids that may join; None admits every worker certificate signed by the CA."""
    max_update_bytes: int = codec.DEFAULT_MAX_BYTES
    max_secagg_bytes: int | None = None
    """Largest secure aggregation answer; None: the round's masked-input size plus a margin."""
    max_message_bytes: int = 4 << 20
    chunk_size: int = codec.DEFAULT_CHUNK
    max_wait_s: float = 20.0
    keepalive_s: float = 20.0
    """Ping a link after this long without activity (HTTP/2 keepalive)."""
    keepalive_timeout_s: float = 10.0
    """A ping not acknowledged within this long closes the link; its calls are cancelled."""
    min_ping_interval_s: float = 5.0
    """Pings from a peer closer together than this (without data) are strikes; after
    ``max_ping_strikes`` the peer gets GOAWAY ENHANCE_YOUR_CALM ("too_many_pings")."""
    require_signed_updates: bool = True
    """Refuse an update its worker did not sign (TLS only; a bad signature is always refused)."""
    uplink_codec: Codec | None = None
    """The codec of workers' updates (``[compression] uplink``); None: float32 only."""
    max_concurrent_uploads: int = 4
    """Updates received at once; each holds a full-size buffer. Later pushes wait, their bytes
    held back by HTTP/2 flow control, so memory does not grow by an update per worker."""
    stream_window_bytes: int = 2 << 20
    """HTTP/2 receive window of each stream, fixed: what a push waiting for a slot holds here
    (with its connection's read buffer); one upload's rate is at most a window per RTT."""

    def __post_init__(self) -> None:
        if self.max_concurrent_uploads < 1:
            raise ConfigError(
                f"max_concurrent_uploads must be >= 1, got {self.max_concurrent_uploads}"
            )


def is_loopback(host: str) -> bool:
    """Return whether ``host`` names only the loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# gRPC's TCP reads start at 8 KiB and adapt; starting at the chunk size and letting them grow
# to 4 MiB made a 100 MB push ~10% faster (interleaved A/B runs). No floor is set, so a
# link that carries only small messages shrinks its reads again.
TCP_READ_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.experimental.tcp_read_chunk_size", codec.DEFAULT_CHUNK),
    ("grpc.experimental.tcp_max_read_chunk_size", 4 << 20),
]


def server_channel_options(opts: ServerOptions) -> list[tuple[str, Any]]:
    """Message limits, flow control and keepalive: ping idle links, calm over-eager pingers."""
    return [
        *TCP_READ_OPTIONS,
        # BDP probing grows a link's window to its bandwidth-delay product, and a push waiting
        # for an upload slot fills it: 15 waiting pushes of 60 MB took 127 MiB with it, 92 MiB
        # with a 2 MiB window, 38-54 MiB with 1 MiB; 1 MiB (one chunk in flight) slowed a
        # loopback push to ~0.7x, 2 MiB did not measurably (interleaved runs, noisy host)
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", opts.stream_window_bytes),
        ("grpc.max_receive_message_length", opts.max_message_bytes),
        ("grpc.max_send_message_length", opts.max_message_bytes),
        ("grpc.keepalive_time_ms", int(opts.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(opts.keepalive_timeout_s * 1000)),
        # gRPC 1.85 waits for a ping's ack for ping_timeout_ms (default 1 min), not for
        # keepalive_timeout_ms alone: without this a dead link went unnoticed far longer
        ("grpc.http2.ping_timeout_ms", int(opts.keepalive_timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # keep pinging a link whose only call is a quiet long-poll Pull
        ("grpc.http2.max_pings_without_data", 0),
        # the name gRPC core reads (a "min_recv_..." spelling would be silently ignored)
        ("grpc.http2.min_ping_interval_without_data_ms", int(opts.min_ping_interval_s * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),
    ]


@functools.lru_cache(maxsize=4096)
def _identity_from_pem(pem: bytes) -> tuple[str, str]:
    return keys.identity_of(pem)


class CoordinatorService:
    """gRPC handlers: authenticate, check the allowlist, decode, and hand over to the hub."""

    def __init__(self, hub: Hub, opts: ServerOptions) -> None:
        self.hub = hub
        self.opts = opts
        self.auth = UpdateAuthenticator(opts.require_signed_updates)
        self.uploads = asyncio.Semaphore(opts.max_concurrent_uploads)
        """Upload slots: an update's buffer is allocated only while its push holds one."""

    async def _identify(self, context: aio.ServicerContext[Any, Any]) -> str:
        """Node id from the peer certificate (insecure mode: from a header); allowlist check."""
        if self.opts.credentials is None:
            md = dict(context.invocation_metadata() or ())
            name, role = str(md.get(NODE_HEADER, "")), "worker"
        else:
            pems = context.auth_context().get("x509_pem_cert") or []
            if not pems:
                await self._refuse(context, "", "UNAUTHENTICATED", "no client certificate")
            name, role = _identity_from_pem(bytes(pems[0]))
        if not name:
            await self._refuse(context, "", "UNAUTHENTICATED", "no node id")
        reason = None
        if role not in keys.CHILD_ROLES:
            reason = f"certificate role {role!r} is not 'worker' or 'edge'"
        elif self.opts.allowlist is not None and name not in self.opts.allowlist:
            reason = "not on the allowlist"
        if reason is not None:
            self.hub.counters["refused_allowlist"] += 1
            await self._refuse(context, name, "PERMISSION_DENIED", f"node {name!r} {reason}")
        self.hub.touch(name)
        return name

    def _peer(self, context: aio.ServicerContext[Any, Any]) -> PeerCertificate | None:
        """The certificate the caller presented (None in insecure mode)."""
        if self.opts.credentials is None:
            return None
        pems = context.auth_context().get("x509_pem_cert") or []
        return peer_certificate(bytes(pems[0])) if pems else None

    async def _refuse(
        self, context: aio.ServicerContext[Any, Any], node: str, code: str, why: str
    ) -> None:
        """Report a refusal of a call before any round binding, then abort it.

        Only the first of a flood is logged and recorded; the repeats are counted.
        """
        round_ = self.hub.round_now()
        if self.hub.record_once("refuse", node, round_, code, code=code, reason=why):
            log.warning("node=%s round=%d: refused (%s): %s", node, round_, code, why)
        await context.abort(grpc.StatusCode[code], why)

    async def decode(
        self, cls: Any, raw: bytes, context: aio.ServicerContext[Any, Any], node: str
    ) -> Any:
        """Parse a unary request; refuse another version or a node id not the certificate's.

        Public for other services sharing this port, like ``identify``.
        """
        try:
            msg = codec.parse(cls, raw)
            codec.check_version(msg.version)
        except ProtocolError as exc:
            await self._refuse(context, node, "INVALID_ARGUMENT", f"{type(exc).__name__}: {exc}")
        if msg.node and msg.node != node:
            why = f"claims node {msg.node!r}, certificate says {node!r}"
            await self._refuse(context, node, "PERMISSION_DENIED", why)
        return msg

    async def identify(self, context: aio.ServicerContext[Any, Any]) -> str:
        """Node id of the caller, allowlist checked: for other services sharing this port."""
        return await self._identify(context)

    async def register(self, raw: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        """Register: check identity, reply with the run id and heartbeat period."""
        node = await self._identify(context)
        peer = self._peer(context)
        await self.decode(pb.RegisterRequest, raw, context, node)
        cert = peer.fingerprint if peer is not None else ""
        if self.hub.record_once(
            "join", node, self.hub.round_now(), cert, **self.auth.certificate(peer)
        ):
            log.info("node=%s round=%d: registered", node, self.hub.round_now())
        return _ser(
            pb.RegisterReply(
                version=codec.PROTOCOL_VERSION,
                run_id=self.hub.run_id,
                node=node,
                round=self.hub.round_now(),
                heartbeat_ms=int(self.hub.heartbeat_s * 1000),
            )
        )

    async def heartbeat(self, raw: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        """Heartbeat: mark the node alive; tell it the round and whether the run is over."""
        node = await self._identify(context)
        await self.decode(pb.HeartbeatRequest, raw, context, node)
        return _ser(
            pb.HeartbeatReply(
                version=codec.PROTOCOL_VERSION,
                round=self.hub.round_now(),
                shutdown=self.hub.finished,
            )
        )

    async def pull(
        self, raw: bytes, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        """Long-poll for the next instruction; stream its header and weight chunks.

        One Pull per node at a time: a concurrent second one is refused.
        """
        node = await self._identify(context)
        req = await self.decode(pb.PullRequest, raw, context, node)
        if not self.hub.pulls.start(node):
            await self._refuse(
                context, node, "ALREADY_EXISTS", "a pull of this node is in progress"
            )
        try:
            async for frame in self._serve_pull(node, req):
                yield frame
        finally:
            self.hub.pulls.end(node)

    async def _serve_pull(self, node: str, req: pb.PullRequest) -> AsyncIterator[bytes]:
        wait = min(req.wait_ms / 1000, self.opts.max_wait_s)
        try:
            out = await self.hub.next_instruction(node, wait)
        except asyncio.CancelledError:
            self.hub.link_down(node, "waiting pull cancelled (keepalive timeout or peer gone)")
            raise
        header = pb.InstructionHeader(
            version=codec.PROTOCOL_VERSION,
            run_id=self.hub.run_id,
            node=node,
            round=self.hub.round_now(),
        )
        if out is None:
            header.kind = pb.SHUTDOWN if self.hub.finished else pb.WAIT
            yield pb.Instruction(header=header).SerializeToString()
            return
        header.round, header.kind = out.round, out.kind  # type: ignore[assignment]
        for key, value in codec.config_to_proto(out.config).items():
            header.config[key].CopyFrom(value)
        kind = pb.Kind.Name(out.kind)
        log.info("node=%s round=%d: sending %s", node, out.round, kind)
        blob = out.blob
        if out.personal is not None:  # a compressed downlink: against what the node holds
            blob, header.base_sha256 = out.personal(node, bytes(req.held_sha256))
        for frame in instruction_frames(header, blob, self.opts.chunk_size):
            yield frame
        if blob is None:
            return
        # every frame handed to gRPC: the model was served; once per node, round and phase
        sent: dict[str, Scalar] = {
            "sha256": bytes(blob.header.sha256).hex(),
            "bytes": len(blob.data),
            "kind": kind,
        }
        if self.hub.pulls.sent(node, out.round, out.kind):
            self.hub.record("model_sent", node, out.round, **sent)
        else:  # the same model again (its first copy was lost): counted, not recorded
            self.hub.repeats.repeat(
                node, f"model_sent:r{out.round}:{kind}", {"repeat_of": "model_sent", **sent}
            )

    async def push(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> bytes:
        """Receive a result stream; check its binding before reading any update byte."""
        node = await self._identify(context)
        reader = ResultReader(self.opts.max_update_bytes, codec=self.opts.uplink_codec)
        it = aiter(requests)
        round_, admitted = -1, False
        try:
            header = reader.read_header(await anext(it))
            round_ = int(header.round)
            counted = self.hub.admit(node, header)
            admitted = not counted
            async with self._upload_slot(header):
                result = await self._read_update(reader, it)
                peer = self._peer(context)
                signed = self.auth.check(peer, result)
                if counted:  # a re-sent copy: its digest (in the trailer) tells duplicate/replay
                    self.hub.check_duplicate(node, result)
                    return _reply(accepted=True, duplicate=True, reason="already counted")
                if signed and self.auth.unrecorded(peer):  # pushed to us without registering
                    self.hub.record("join", node, round_, via="push", **self.auth.certificate(peer))
                admitted = False  # from here the hub owns the upload slot
                await self.hub.deliver(node, result, signed)
        except StopAsyncIteration:
            self._release(admitted, node, round_, "truncated result stream")
            await self._abort(context, node, round_, "INVALID_ARGUMENT", "truncated result stream")
        except Refused as exc:
            self._release(admitted, node, round_, exc.reason)
            await self._abort(context, node, round_, exc.code, exc.reason, exc.event)
        except ProtocolError as exc:
            self._release(admitted, node, round_, f"{type(exc).__name__}: {exc}")
            code = _status_of(exc)
            await self._abort(context, node, round_, code, f"{type(exc).__name__}: {exc}")
        except BaseException:
            self._release(admitted, node, round_, "upload interrupted")
            raise
        return _reply(accepted=True)

    def _upload_slot(self, header: pb.ResultHeader) -> contextlib.AbstractAsyncContextManager[Any]:
        """A slot of ``max_concurrent_uploads`` for a result with an update; none without one.

        Taken after the binding is accepted and before the buffer is allocated; a push that
        waits reads nothing, so flow control holds its bytes in the worker's socket.
        """
        if header.HasField("update"):
            return self.uploads
        return contextlib.nullcontext()

    async def _read_update(self, reader: ResultReader, it: AsyncIterator[bytes]) -> DecodedResult:
        """Allocate the update (binding accepted), read its chunks and trailer, check them."""
        reader.expected = self.hub.expected_layout()
        reader.start_blob()
        async for raw in it:
            reader.read_chunk(raw)
        return reader.finish()

    async def _abort(
        self,
        context: aio.ServicerContext[Any, Any],
        node: str,
        round_: int,
        code: str,
        why: str,
        event: str | None = "refuse",
    ) -> None:
        """Report a refused push (unless the hub has), then abort it."""
        first = event is None or self.hub.record_once(
            event, node, round_, f"{code}:r{round_}", code=code, reason=why
        )
        if first:  # a flood of refused pushes: one line and one record, the rest counted
            log.warning("node=%s round=%d: push refused (%s): %s", node, round_, code, why)
        await context.abort(grpc.StatusCode[code], why)

    def _release(self, admitted: bool, node: str, round_: int, why: str) -> None:
        if admitted:
            self.hub.release(node, round_, why)
        else:
            self.hub.note_error(node, why)


def _status_of(exc: ProtocolError) -> str:
    """The gRPC status of a refused push: size limits, signatures, and every other defect."""
    if isinstance(exc, codec.SizeLimitExceeded):
        return "RESOURCE_EXHAUSTED"
    if isinstance(exc, SignatureError):
        return "UNAUTHENTICATED"
    return "INVALID_ARGUMENT"


def _reply(accepted: bool, duplicate: bool = False, reason: str = "") -> bytes:
    return _ser(
        pb.PushReply(
            version=codec.PROTOCOL_VERSION, accepted=accepted, duplicate=duplicate, reason=reason
        )
    )


def _ser(msg: Any) -> bytes:
    return bytes(msg.SerializeToString())


def _handlers(svc: CoordinatorService) -> grpc.GenericRpcHandler:
    ident = None  # raw bytes in and out: the codec does all decoding
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Register": grpc.unary_unary_rpc_method_handler(svc.register, ident, ident),
            "Heartbeat": grpc.unary_unary_rpc_method_handler(svc.heartbeat, ident, ident),
            "Pull": grpc.unary_stream_rpc_method_handler(svc.pull, ident, ident),
            "Push": grpc.stream_unary_rpc_method_handler(svc.push, ident, ident),
        },
    )


async def start_server(
    hub: Hub,
    opts: ServerOptions,
    extra: Sequence[Callable[[CoordinatorService], grpc.GenericRpcHandler]] = (),
) -> tuple[aio.Server, int]:
    """Start serving ``hub``; return the server and the bound port.

    ``extra`` makes handlers of further services (secure aggregation) from the coordinator
    service, so they share its port, identity check and allowlist.
    """
    server = aio.server(options=server_channel_options(opts))
    svc = CoordinatorService(hub, opts)
    server.add_generic_rpc_handlers((_handlers(svc), *(make(svc) for make in extra)))
    address = f"{opts.host}:{opts.port}"
    if opts.credentials is None:
        if not opts.insecure:
            raise ConfigError("no TLS credentials: pass certificates, or --insecure on loopback")
        if not is_loopback(opts.host):
            raise ConfigError(f"refusing to listen on {opts.host} without TLS (loopback only)")
        log.warning(
            "node=coordinator round=%d: INSECURE MODE: no TLS, node ids are NOT authenticated; "
            "never use this outside a local test",
            hub.round_now(),
        )
        port = server.add_insecure_port(address)
    else:
        c = opts.credentials
        creds = grpc.ssl_server_credentials(
            [(c.key, c.cert)], root_certificates=c.ca, require_client_auth=True
        )
        port = server.add_secure_port(address, creds)
        if not opts.require_signed_updates:
            log.warning(
                "node=coordinator round=%d: unsigned updates accepted "
                "(require_signed_updates = false): the audit ledger cannot prove their authors",
                hub.round_now(),
            )
    await server.start()
    log.info("node=coordinator round=%d: listening on %s:%d", hub.round_now(), opts.host, port)
    return server, port


__all__ = ["Outgoing", "ServerOptions", "start_server"]
