"""Secure aggregation over gRPC: the coordinator's ``SecAgg`` service and a worker's link to it.

Service ``murmura.v1.SecAgg`` (``proto/secagg.proto``) shares the coordinator's port, mTLS
identity and allowlist with ``murmura.v1.Coordinator``. ``Fetch`` long-polls for the caller's
request of a step, ``Send`` delivers its answer; both are unary, so one stage message must fit
in ``max_message_bytes`` (4 MiB by default: a masked input of about a million parameters).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
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

    async def send(self, raw: bytes, context: aio.ServicerContext[Any, Any]) -> bytes:
        """Send: hand the caller's answer for a step to the coordinator's driver."""
        node = await self.coordinator.identify(context)
        req = await self.coordinator.decode(spb.SecAggSendRequest, raw, context, node)
        try:
            dup = await self.exchange.submit(node, req.run_id, req.round, req.step, req.payload)
        except Refused as exc:
            await self._refuse(context, node, req.round, exc)
            raise
        return _ser(
            spb.SecAggSendReply(version=codec.PROTOCOL_VERSION, accepted=True, duplicate=dup)
        )

    async def _refuse(
        self, context: aio.ServicerContext[Any, Any], node: str, round_: int, exc: Refused
    ) -> None:
        log.warning("node=%s round=%d: secagg request refused (%s): %s",
                    node, round_, exc.code, exc.reason)  # fmt: skip
        if exc.event is not None:
            self.coordinator.hub.record(exc.event, node, round_, code=exc.code, reason=exc.reason)
        await context.abort(grpc.StatusCode[exc.code], exc.reason)


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
            },
        )

    return make


class SecAggLink:
    """A worker's SecAgg calls over its ``CoordinatorLink`` channel (deadlines, retries)."""

    def __init__(self, link: CoordinatorLink) -> None:
        self.link = link
        self._fetch = link.channel.unary_unary(f"/{SECAGG_SERVICE}/Fetch")
        self._send = link.channel.unary_unary(f"/{SECAGG_SERVICE}/Send")

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
        """Deliver this node's answer for ``step`` (retries while UNAVAILABLE; counted once)."""
        req = spb.SecAggSendRequest(
            version=codec.PROTOCOL_VERSION, run_id=self.link.run_id, round=round_,
            node=self.link.node, step=step, payload=payload,
        ).SerializeToString()  # fmt: skip

        def call() -> bytes:
            return bytes(
                self._send(req, timeout=self.link.opts.call_timeout_s, metadata=self.link.metadata)
            )

        reply = codec.parse(spb.SecAggSendReply, self.link.retrying("secagg send", call))
        codec.check_version(reply.version)
        return reply
