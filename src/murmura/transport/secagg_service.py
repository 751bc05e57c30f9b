"""Secure aggregation over gRPC: the coordinator's ``SecAgg`` service and a worker's link to it.

Service ``murmura.v1.SecAgg`` (``proto/secagg.proto``) shares the coordinator's port, mTLS
identity and allowlist with ``murmura.v1.Coordinator``. ``Fetch`` long-polls for the caller's
request of a step (requests are small: they grow with a node's neighbours, not the model);
``Send`` delivers an answer of up to one chunk in one message, and ``SendStream`` a larger one
(the masked input: 4 bytes per parameter) in chunks (``secagg_stream``), so no answer has to
fit in ``max_message_bytes``. An answer's size is checked against ``max_secagg_bytes``, by
default the round's masked-input size plus a margin, before the answer is read; one that
fails a transport check (size, length, digest) is refused and the node does not get another
try at that step, as with a malformed message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import grpc
from grpc import aio

from murmura.errors import ProtocolError
from murmura.transport import codec
from murmura.transport.grpc_client import CoordinatorLink
from murmura.transport.grpc_server import CoordinatorService, _ser
from murmura.transport.hub import Refused
from murmura.transport.proto import secagg_pb2 as spb
from murmura.transport.secagg_exchange import SecAggExchange
from murmura.transport.secagg_stream import (
    SendStreamReader,
    StreamedAnswer,
    send_frames,
    stream_header,
)

log = logging.getLogger(__name__)

SECAGG_SERVICE = "murmura.v1.SecAgg"
SECAGG_CONFIG_KEY = "secagg"
"""FIT config key: true when the round's updates travel through secure aggregation."""


class SecAggService:
    """gRPC handlers: identify the caller like the Coordinator service, then the exchange."""

    def __init__(self, exchange: SecAggExchange, coordinator: CoordinatorService) -> None:
        self.exchange = exchange
        self.coordinator = coordinator

    async def fetch(self, raw: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        """Fetch: the caller's request for a step, or WAIT / LEFT / ENDED."""
        node = await self.coordinator.identify(context)
        req = await self.coordinator.decode(spb.SecAggFetchRequest, raw, context, node)
        wait = min(req.wait_ms / 1000, self.coordinator.opts.max_wait_s)
        try:
            got = await self.exchange.fetch(node, req.run_id, req.round, req.step, wait)
        except Refused as exc:
            await self._refuse(context, node, req.round, exc)
            raise  # unreachable: abort raises
        return _ser(
            spb.SecAggFetchReply(
                version=codec.PROTOCOL_VERSION, run_id=self.exchange.run_id, round=req.round,
                node=node, step=req.step, status=cast(spb.SecAggStatus, int(got.status)),
                payload=got.payload, reason=got.reason,
            )
        )  # fmt: skip

    @property
    def max_answer_bytes(self) -> int:
        """Largest answer accepted now: the configured limit, else the round's own."""
        configured = self.coordinator.opts.max_secagg_bytes
        return configured if configured is not None else self.exchange.max_answer_bytes

    async def send(self, raw: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        """Send: hand the caller's answer for a step to the coordinator's driver."""
        node = await self.coordinator.identify(context)
        req = await self.coordinator.decode(spb.SecAggSendRequest, raw, context, node)
        try:
            self.exchange.admit(node, req.run_id, req.round, req.step)
            if len(req.payload) > self.max_answer_bytes:
                too_big = codec.SizeLimitExceeded(
                    f"answer of {len(req.payload)} B exceeds the limit {self.max_answer_bytes} B"
                )
                raise await self._bad_answer(node, req.round, req.step, too_big)
            dup = await self.exchange.submit(node, req.run_id, req.round, req.step, req.payload)
        except Refused as exc:
            await self._refuse(context, node, req.round, exc)
            raise
        return _reply(dup)

    async def send_stream(
        self, requests: AsyncIterator[bytes], context: aio.ServicerContext[Any, Any]
    ) -> bytes:
        """SendStream: an answer in chunks, bound and size-checked before it is allocated."""
        node = await self.coordinator.identify(context)
        reader = SendStreamReader()
        try:
            got = await self._read_stream(node, reader, aiter(requests))
            dup = await self.exchange.submit(
                node, got.run_id, got.round, got.step, got.payload, got.digest
            )
        except Refused as exc:
            round_ = int(reader.header.round) if reader.header is not None else -1
            await self._refuse(context, node, round_, exc)
            raise
        return _reply(dup)

    async def _read_stream(
        self, node: str, reader: SendStreamReader, it: AsyncIterator[bytes]
    ) -> StreamedAnswer:
        """Check the header and its binding, then read and check the chunks it announced."""
        try:
            h = reader.read_header(await anext(it))
        except StopAsyncIteration:
            raise Refused("INVALID_ARGUMENT", "empty secagg send stream") from None
        except ProtocolError as exc:
            raise Refused("INVALID_ARGUMENT", f"{type(exc).__name__}: {exc}") from None
        if h.node and h.node != node:
            raise Refused("PERMISSION_DENIED", f"claims node {h.node!r}, certificate says {node!r}")
        self.exchange.admit(node, h.run_id, h.round, h.step)
        try:
            reader.start(self.max_answer_bytes)  # the size limit, before any allocation
            async for raw in it:
                reader.read_chunk(raw)
            return reader.finish()
        except ProtocolError as exc:
            raise await self._bad_answer(node, h.round, h.step, exc) from None

    async def _bad_answer(self, node: str, round_: int, step: int, exc: ProtocolError) -> Refused:
        """Count a bound answer that failed a transport check as refused; return its status."""
        why = f"{type(exc).__name__}: {exc}"
        await self.exchange.reject(node, round_, step, why)
        too_big = isinstance(exc, codec.SizeLimitExceeded)
        return Refused("RESOURCE_EXHAUSTED" if too_big else "INVALID_ARGUMENT", why)

    async def _refuse(
        self, context: aio.ServicerContext[Any, Any], node: str, round_: int, exc: Refused
    ) -> None:
        hub, kind = self.coordinator.hub, f"secagg:{exc.code}:r{round_}"
        if exc.event is None or hub.record_once(
            exc.event, node, round_, kind, code=exc.code, reason=exc.reason
        ):  # a flood: one line and one record, the rest counted
            log.warning("node=%s round=%d: secagg request refused (%s): %s",
                        node, round_, exc.code, exc.reason)  # fmt: skip
        await context.abort(grpc.StatusCode[exc.code], exc.reason)


def _reply(duplicate: bool) -> bytes:
    return _ser(
        spb.SecAggSendReply(version=codec.PROTOCOL_VERSION, accepted=True, duplicate=duplicate)
    )


def secagg_handlers(
    exchange: SecAggExchange,
) -> Callable[[CoordinatorService], grpc.GenericRpcHandler]:
    """A factory for ``start_server(extra=...)``: the SecAgg service on the coordinator's port."""

    def make(coordinator: CoordinatorService) -> grpc.GenericRpcHandler:
        svc = SecAggService(exchange, coordinator)
        return grpc.method_handlers_generic_handler(
            SECAGG_SERVICE,
            {
                "Fetch": grpc.unary_unary_rpc_method_handler(svc.fetch),
                "Send": grpc.unary_unary_rpc_method_handler(svc.send),
                "SendStream": grpc.stream_unary_rpc_method_handler(svc.send_stream),
            },
        )

    return make


class SecAggLink:
    """A worker's SecAgg calls over its ``CoordinatorLink`` channel (deadlines, retries)."""

    def __init__(self, link: CoordinatorLink) -> None:
        self.link = link
        self._fetch = link.channel.unary_unary(f"/{SECAGG_SERVICE}/Fetch")
        self._send = link.channel.unary_unary(f"/{SECAGG_SERVICE}/Send")
        self._send_stream = link.channel.stream_unary(f"/{SECAGG_SERVICE}/SendStream")

    def fetch(self, round_: int, step: spb.SecAggStep) -> spb.SecAggFetchReply:
        """Long-poll for this node's request of ``step`` (retries while UNAVAILABLE)."""
        opts = self.link.opts
        req = spb.SecAggFetchRequest(
            version=codec.PROTOCOL_VERSION, run_id=self.link.run_id, round=round_,
            node=self.link.node, step=step, wait_ms=int(opts.pull_wait_s * 1000),
        ).SerializeToString()  # fmt: skip

        def call() -> bytes:
            timeout = opts.pull_wait_s + opts.call_timeout_s
            return bytes(self._fetch(req, timeout=timeout, metadata=self.link.metadata))

        reply = codec.parse(spb.SecAggFetchReply, self.link.retrying("secagg fetch", call))
        codec.check_version(reply.version)
        if reply.node != self.link.node or reply.round != round_ or reply.step != step:
            raise ProtocolError(
                f"secagg reply bound to ({reply.node!r}, round {reply.round}, step "
                f"{reply.step}), asked for ({self.link.node!r}, round {round_}, step {step})"
            )
        return reply

    def send(self, round_: int, step: spb.SecAggStep, payload: bytes) -> spb.SecAggSendReply:
        """Deliver this node's answer for ``step`` (retries while UNAVAILABLE; counted once).

        An answer larger than one chunk goes in chunks (``SendStream``), a smaller one in one
        message.
        """
        chunked = len(payload) > self.link.opts.chunk_size
        call = (self._chunked if chunked else self._unary)(round_, step, payload)
        reply = codec.parse(spb.SecAggSendReply, self.link.retrying("secagg send", call))
        codec.check_version(reply.version)
        return reply

    def _unary(self, round_: int, step: spb.SecAggStep, payload: bytes) -> Callable[[], bytes]:
        req = spb.SecAggSendRequest(
            version=codec.PROTOCOL_VERSION, run_id=self.link.run_id, round=round_,
            node=self.link.node, step=step, payload=payload,
        ).SerializeToString()  # fmt: skip
        timeout = self.link.opts.call_timeout_s
        return lambda: bytes(self._send(req, timeout=timeout, metadata=self.link.metadata))

    def _chunked(self, round_: int, step: spb.SecAggStep, payload: bytes) -> Callable[[], bytes]:
        header = stream_header(self.link.run_id, round_, self.link.node, step, payload)
        opts = self.link.opts

        def call() -> bytes:  # a fresh frame iterator for every try
            frames = send_frames(header, payload, opts.chunk_size)
            timeout = opts.transfer_timeout_s
            return bytes(self._send_stream(frames, timeout=timeout, metadata=self.link.metadata))

        return call
