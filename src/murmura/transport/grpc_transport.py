"""The gRPC transport: ``start_server`` over the coordinator's ``Hub``, ``CoordinatorLink`` out.

The production entry of ``murmura.transport.registry``: the ``Hub`` that the gRPC handlers
feed is itself the coordinator's ``Channel``, so secure aggregation's stages, per-worker
downlink models and the asynchronous coordinator's dispatches all travel over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from grpc import aio

from murmura.transport.base import ASYNC, DOWNLINK, SECAGG
from murmura.transport.grpc_client import CoordinatorLink, LinkOptions
from murmura.transport.grpc_server import ServerOptions, start_server
from murmura.transport.hub import Hub
from murmura.transport.keys import Credentials

if TYPE_CHECKING:
    from murmura.transport.base import Extra


@dataclass(frozen=True, slots=True)
class GrpcServing:
    """A started gRPC server; the round logic drives its ``Hub``."""

    channel: Hub
    server: aio.Server
    port: int

    async def stop(self) -> None:
        """Stop serving, letting calls in flight end for half a second."""
        await self.server.stop(grace=0.5)


class GrpcTransport:
    """The star protocol over gRPC (``murmura.proto``), TLS with node certificates."""

    features = frozenset({SECAGG, DOWNLINK, ASYNC})

    async def serve(
        self, hub: Hub, opts: ServerOptions, extra: Sequence[Extra] = ()
    ) -> GrpcServing:
        """Start the coordinator service (and ``extra``) for ``hub`` at ``opts``' address."""
        server, port = await start_server(hub, opts, extra)
        return GrpcServing(hub, server, port)

    def link(
        self,
        target: str,
        node: str,
        credentials: Credentials | None,
        opts: LinkOptions | None = None,
    ) -> CoordinatorLink:
        """A ``CoordinatorLink`` to ``target``."""
        return CoordinatorLink(target, node, credentials, opts)


GRPC = GrpcTransport()
"""The registry's ``"grpc"`` entry."""
