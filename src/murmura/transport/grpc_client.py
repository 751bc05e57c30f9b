"""A worker's link to the coordinator: it dials out, so workers may sit behind NAT.

Every call has a deadline; only UNAVAILABLE is retried, with exponential backoff and full
jitter; replies are decoded by the codec. Pushing the same result twice is safe: the
coordinator acknowledges the second copy as a duplicate and counts it once. Over TLS the link
first checks that the node it dials holds a coordinator or edge certificate
(``murmura.transport.dial_check``; ``IdentityError`` otherwise, before anything is sent), pins
its channel to that node's name, and signs every update it pushes with the key of its
certificate (``murmura.update_signing``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from murmura import console
from murmura.compress.base import Codec
from murmura.errors import ConfigError, ProtocolError
from murmura.transport import codec, dial_check, keys
from murmura.transport.digests import UPDATE_DIGEST
from murmura.transport.grpc_server import NODE_HEADER, SERVICE, TCP_READ_OPTIONS, is_loopback
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import (
    MAX_ERROR_CHARS,
    DecodedInstruction,
    decode_instruction,
    result_frames,
)
from murmura.types import EvaluateRes, FitRes, Layout
from murmura.update_signing import UpdateSigner, UpdateStatement

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class LinkOptions:
    """Deadlines, retry and keepalive settings of a worker's link."""

    call_timeout_s: float = 10.0
    pull_wait_s: float = 10.0
    transfer_timeout_s: float = 300.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    max_retry_s: float = 60.0
    chunk_size: int = codec.DEFAULT_CHUNK
    max_model_bytes: int = codec.DEFAULT_MAX_BYTES
    max_message_bytes: int = 4 << 20
    keepalive_s: float = 30.0
    """Ping the coordinator after this long without activity; keep it >= the server's
    ``min_ping_interval_s`` or the server tells this worker to go away."""
    keepalive_timeout_s: float = 10.0
    """A ping not acknowledged within this long closes the link: calls fail UNAVAILABLE."""
    server_name: str | None = None
    """Expected name in the coordinator's certificate when the address does not carry it."""
    parent_roles: tuple[str, ...] = keys.PARENT_ROLES
    """Certificate roles the node at the dialled address may hold (``("coordinator",)`` for a
    worker that must not sit under an edge)."""


def backoff_delays(initial: float, cap: float, rng: random.Random) -> Iterator[float]:
    """Exponential backoff with full jitter: uniform(0, min(cap, initial * 2**k))."""
    k = 0
    while True:
        yield rng.uniform(0, min(cap, initial * (2**k)))
        k += 1


def channel_options(opts: LinkOptions) -> list[tuple[str, Any]]:
    """Limits and keepalive of the worker's channel (pings no faster than the server permits)."""
    out: list[tuple[str, Any]] = [
        *TCP_READ_OPTIONS,  # the worker receives whole models in Pull
        ("grpc.max_receive_message_length", opts.max_message_bytes),
        ("grpc.max_send_message_length", opts.max_message_bytes),
        ("grpc.keepalive_time_ms", int(opts.keepalive_s * 1000)),
        ("grpc.keepalive_timeout_ms", int(opts.keepalive_timeout_s * 1000)),
        ("grpc.http2.ping_timeout_ms", int(opts.keepalive_timeout_s * 1000)),  # see server
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),
    ]
    if opts.server_name:
        out.append(("grpc.ssl_target_name_override", opts.server_name))
    return out


class CoordinatorLink:
    """Register, pull instructions, push results and heartbeat, over one channel."""

    def __init__(
        self,
        target: str,
        node: str,
        credentials: keys.Credentials | None,
        opts: LinkOptions | None = None,
        seed: int | None = None,
    ) -> None:
        self.target, self.node = target, node
        self.opts = opts or LinkOptions()
        self.run_id = ""
        self._rng = random.Random(seed)
        self._metadata: tuple[tuple[str, str], ...] = ()
        self._signer = UpdateSigner(credentials.key) if credentials is not None else None
        self._credentials = credentials
        self._channel: grpc.Channel | None = None
        self.parent: dial_check.Identity | None = None
        """Who we work for, once ``register`` checked the certificate at ``target`` (TLS)."""
        if credentials is None:
            host = target.rsplit(":", 1)[0]
            if not is_loopback(host):
                raise ConfigError(
                    f"refusing an insecure link to {target}: TLS is required off loopback"
                )
            log.warning("node=%s round=-: INSECURE link (no TLS) to %s", node, target)
            self._metadata = ((NODE_HEADER, node),)
            self._open(grpc.insecure_channel(target, channel_options(self.opts)))

    def _open(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._register = channel.unary_unary(f"/{SERVICE}/Register")
        self._heartbeat = channel.unary_unary(f"/{SERVICE}/Heartbeat")
        self._pull = channel.unary_stream(f"/{SERVICE}/Pull")
        self._push = channel.stream_unary(f"/{SERVICE}/Push")

    @property
    def channel(self) -> grpc.Channel:
        """The channel to the parent; over TLS it opens after the check of the first call."""
        self._ensure_open()
        assert self._channel is not None
        return self._channel

    def _ensure_open(self) -> None:
        """Check the parent and open the channel, unless done (``IdentityError`` if not one)."""
        if self._channel is None and self._credentials is not None:
            self._check_parent(self._credentials)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """Call metadata (the node id header in insecure mode only)."""
        return self._metadata

    def close(self) -> None:
        """Close the channel."""
        if self._channel is not None:
            self._channel.close()

    def _check_parent(self, creds: keys.Credentials) -> None:
        """Open the TLS channel once the node at ``target`` proved to be a parent.

        The channel is pinned to the parent's verified name (the TLS target name), so a
        reconnection reaches only a node whose certificate carries that name.
        """
        parent = self.retrying(
            "dial",
            lambda: dial_check.parent_identity(
                self.target,
                creds,
                self.opts.parent_roles,
                self.opts.server_name,
                self.opts.call_timeout_s,
            ),
        )
        log.info("node=%s round=-: %s is %s %r", self.node, self.target, parent.role, parent.name)
        self.parent = parent
        opts = dataclasses.replace(self.opts, server_name=parent.name)
        tls = grpc.ssl_channel_credentials(creds.ca, creds.key, creds.cert)
        self._open(grpc.secure_channel(self.target, tls, channel_options(opts)))

    def retrying(self, what: str, call: Callable[[], T]) -> T:
        """Run ``call``; retry only UNAVAILABLE with backoff and jitter, up to ``max_retry_s``."""
        start = time.monotonic()
        delays = backoff_delays(self.opts.backoff_initial_s, self.opts.backoff_max_s, self._rng)
        attempt = 0
        while True:
            attempt += 1
            try:
                got = call()
            except (grpc.RpcError, dial_check.Unreachable) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                delay = next(delays)
                if time.monotonic() + delay - start > self.opts.max_retry_s:
                    raise
                console.retrying(
                    log, self.node, "coordinator", self.target, delay, attempt, call=what
                )
                time.sleep(delay)
                continue
            if attempt > 1:
                console.say(log, "reconnected", f"coordinator at {self.target} answers again",
                            node=self.node, target=self.target, call=what)  # fmt: skip
            return got

    def register(self) -> pb.RegisterReply:
        """Register (with retries); remembers the run id.

        Over TLS the first call of the link (normally this one) checks that the node at
        ``target`` holds a coordinator or an edge certificate (``IdentityError`` if not)
        before anything is sent to it.
        """
        self._ensure_open()
        req = pb.RegisterRequest(version=codec.PROTOCOL_VERSION, node=self.node)

        def call() -> bytes:
            raw = req.SerializeToString()
            return bytes(
                self._register(raw, timeout=self.opts.call_timeout_s, metadata=self._metadata)
            )

        reply = codec.parse(pb.RegisterReply, self.retrying("register", call))
        codec.check_version(reply.version)
        if reply.node != self.node:
            raise ProtocolError(f"coordinator knows us as {reply.node!r}, not {self.node!r}")
        self.run_id = reply.run_id
        log.info("node=%s round=%d: registered in run %s", self.node, reply.round, self.run_id)
        return reply

    def heartbeat(self, round_: int) -> pb.HeartbeatReply:
        """Send one heartbeat (no retries: the next one is the retry)."""
        self._ensure_open()
        req = pb.HeartbeatRequest(
            version=codec.PROTOCOL_VERSION, run_id=self.run_id, node=self.node, round=round_
        )
        raw = self._heartbeat(
            req.SerializeToString(), timeout=self.opts.call_timeout_s, metadata=self._metadata
        )
        reply = codec.parse(pb.HeartbeatReply, bytes(raw))
        codec.check_version(reply.version)
        return reply

    def pull(
        self, after_round: int, held: bytes = b"", downlink: Codec | None = None
    ) -> DecodedInstruction:
        """Long-poll for the next instruction (with retries); ``after_round`` is informational.

        ``held``: SHA-256 of the model this worker holds, for a delta in ``downlink``.
        """
        self._ensure_open()
        req = pb.PullRequest(
            version=codec.PROTOCOL_VERSION,
            run_id=self.run_id,
            node=self.node,
            after_round=after_round,
            wait_ms=int(self.opts.pull_wait_s * 1000),
            held_sha256=held,
        ).SerializeToString()
        timeout = self.opts.pull_wait_s + self.opts.transfer_timeout_s

        def call() -> DecodedInstruction:
            stream = self._pull(req, timeout=timeout, metadata=self._metadata)
            parts = (bytes(m) for m in stream)
            return decode_instruction(parts, self.opts.max_model_bytes, downlink)

        ins = self.retrying("pull", call)
        if ins.node != self.node:
            raise ProtocolError(f"instruction addressed to {ins.node!r}, not {self.node!r}")
        if ins.run_id != self.run_id:
            log.warning(
                "node=%s round=%d: run changed from %s to %s",
                self.node,
                ins.round,
                self.run_id,
                ins.run_id,
            )
            self.run_id = ins.run_id
        return ins

    def push(
        self, round_: int, res: FitRes, layout: Layout, wire: tuple[str, bytes] | None = None
    ) -> pb.PushReply:
        """Stream a FIT result in chunks (with retries; a re-sent copy counts once).

        ``wire`` is (codec spec, framed bytes) of a compressed update, sent instead of the
        float32 ``res.update`` (``murmura.compress``).
        """
        self._ensure_open()
        metrics = {k: float(v) for k, v in res.metrics.items()}
        blob = (  # hashed while sent
            codec.encode_blob(res.update, layout, digest=False)
            if wire is None
            else codec.compressed_blob(wire[1], wire[0], layout)
        )

        def parts() -> Iterator[bytes]:
            header = pb.ResultHeader(
                version=codec.PROTOCOL_VERSION,
                run_id=self.run_id,
                round=round_,
                node=self.node,
                kind=pb.FIT,
                num_examples=res.num_examples,
                metrics=metrics,
            )
            yield from result_frames(header, blob, self.opts.chunk_size, self._sign_for(header))

        def call() -> bytes:
            return bytes(
                self._push(parts(), timeout=self.opts.transfer_timeout_s, metadata=self._metadata)
            )

        reply = codec.parse(pb.PushReply, self.retrying("push", call))
        codec.check_version(reply.version)
        return reply

    def push_evaluation(self, round_: int, res: EvaluateRes) -> pb.PushReply:
        """Send an EVALUATE result: loss, example count and metrics, no update (with retries)."""
        header = pb.ResultHeader(
            version=codec.PROTOCOL_VERSION,
            run_id=self.run_id,
            round=round_,
            node=self.node,
            kind=pb.EVALUATE,
            num_examples=res.num_examples,
            loss=res.loss,
            metrics={k: float(v) for k, v in res.metrics.items()},
        )
        return self._push_header(header)

    def push_stats(self, round_: int, stats: Sequence[float], num_examples: int) -> pb.PushReply:
        """Send a STATS result: the site's sums, counts and histograms, no rows (with retries)."""
        header = pb.ResultHeader(
            version=codec.PROTOCOL_VERSION,
            run_id=self.run_id,
            round=round_,
            node=self.node,
            kind=pb.STATS,
            num_examples=num_examples,
            stats=stats,
        )
        return self._push_header(header)

    def push_error(self, round_: int, kind: int, error: str) -> pb.PushReply:
        """Report that the local fit or evaluate of ``round_`` raised: ``error``, nothing else.

        The coordinator lists this node as failed at once instead of at the round's deadline.
        """
        header = pb.ResultHeader(
            version=codec.PROTOCOL_VERSION,
            run_id=self.run_id,
            round=round_,
            node=self.node,
            kind=kind,  # type: ignore[arg-type]
            error=error[:MAX_ERROR_CHARS],
        )
        return self._push_header(header)

    def _sign_for(self, header: pb.ResultHeader) -> Callable[[bytes], bytes] | None:
        """Signs the update ``header`` announces, given its digest (None on an insecure link)."""
        signer = self._signer
        if signer is None:
            return None
        run_id, round_, node = header.run_id, int(header.round), header.node
        kind, n = pb.Kind.Name(header.kind), int(header.num_examples)
        return lambda digest: signer.sign(
            UpdateStatement(run_id, round_, node, kind, n, digest, UPDATE_DIGEST)
        )

    def _push_header(self, header: pb.ResultHeader) -> pb.PushReply:
        """Send a result that is its header alone (with retries; a re-sent copy counts once)."""
        self._ensure_open()

        def call() -> bytes:
            frames = result_frames(header, None)
            timeout = self.opts.call_timeout_s
            return bytes(self._push(frames, timeout=timeout, metadata=self._metadata))

        reply = codec.parse(pb.PushReply, self.retrying("push", call))
        codec.check_version(reply.version)
        return reply
