"""The ``Transport`` extension point: how a coordinator serves its nodes and a worker reaches it.

A transport has a server half and a client half. ``Transport.serve`` binds the coordinator's
``Hub`` (its round state) to an address, starts serving and yields a ``Serving``: the bound
port and the ``Channel`` (``murmura.transport.channel``) that the round logic drives.
``Transport.link`` is a worker's ``Link`` to its coordinator: register, pull the next
instruction, push a result, heartbeat. ``murmura.transport.registry`` names the transports;
gRPC (``murmura.transport.grpc_transport``) is the production one, and the only one that
carries secure aggregation, a compressed downlink and the asynchronous coordinator's
dispatches (its ``features``); a coordinator refuses those settings over any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from murmura.transport.channel import Channel
from murmura.transport.hub import Hub
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedInstruction
from murmura.types import EvaluateRes, FitRes, Layout

if TYPE_CHECKING:
    import grpc

    from murmura.compress.base import Codec
    from murmura.transport.grpc_client import LinkOptions
    from murmura.transport.grpc_server import CoordinatorService, ServerOptions
    from murmura.transport.keys import Credentials

    Extra = Callable[[CoordinatorService], grpc.GenericRpcHandler]

SECAGG, DOWNLINK, ASYNC = "secagg", "downlink", "async"
"""``Transport.features``: secure aggregation's stages, per-worker (delta) models, and the
asynchronous coordinator's dispatches, which need the ``Hub`` itself as the channel."""


class Link(Protocol):
    """A worker's link to its coordinator (what ``murmura.node.worker.Worker`` calls).

    A lost coordinator is ``murmura.transport.dial_check.Unreachable`` (or gRPC's
    UNAVAILABLE): the worker rejoins with backoff.
    """

    @property
    def node(self) -> str:
        """The id of this node."""
        ...

    @property
    def target(self) -> str:
        """The coordinator's address, as the progress lines show it."""
        ...

    @property
    def run_id(self) -> str:
        """The run, once ``register`` answered (empty before)."""
        ...

    def register(self) -> pb.RegisterReply:
        """Join the run (again): the current round and the heartbeat period."""
        ...

    def pull(
        self, after_round: int, held: bytes = b"", downlink: Codec | None = None
    ) -> DecodedInstruction:
        """Wait for the next instruction; ``held``/``downlink``: a delta against the model held."""
        ...

    def push(
        self, round_: int, res: FitRes, layout: Layout, wire: tuple[str, bytes] | None = None
    ) -> pb.PushReply:
        """Deliver a FIT result (``wire``: the update encoded by the uplink codec)."""
        ...

    def push_evaluation(self, round_: int, res: EvaluateRes) -> pb.PushReply:
        """Deliver an EVALUATE result."""
        ...

    def push_stats(self, round_: int, stats: Sequence[float], num_examples: int) -> pb.PushReply:
        """Deliver a STATS answer (sums over this site's rows)."""
        ...

    def push_error(self, round_: int, kind: int, error: str) -> pb.PushReply:
        """Tell the coordinator that this round's instruction failed here, and why."""
        ...

    def heartbeat(self, round_: int) -> pb.HeartbeatReply:
        """Say this node is alive; the reply says whether the run is over."""
        ...

    def close(self) -> None:
        """Release the link."""
        ...


class Serving(Protocol):
    """A started server half: where it listens and what the round logic drives."""

    @property
    def port(self) -> int:
        """The bound port (0: none)."""
        ...

    @property
    def channel(self) -> Channel:
        """The coordinator's view of its nodes through this transport."""
        ...

    async def stop(self) -> None:
        """Stop serving."""
        ...


class Transport(Protocol):
    """Both halves of one way to carry the star protocol between coordinator and workers."""

    @property
    def features(self) -> frozenset[str]:
        """Which of ``SECAGG``, ``DOWNLINK`` and ``ASYNC`` this transport carries."""
        ...

    async def serve(self, hub: Hub, opts: ServerOptions, extra: Sequence[Extra] = ()) -> Serving:
        """Serve ``hub`` as ``opts`` say (``extra``: further services on the same port)."""
        ...

    def link(
        self,
        target: str,
        node: str,
        credentials: Credentials | None,
        opts: LinkOptions | None = None,
    ) -> Link:
        """A worker ``node``'s link to the coordinator at ``target``."""
        ...
