"""Run a coordinator endpoint on an event loop in a background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc
from grpc import aio

from murmura.transport.grpc_server import CoordinatorService, ServerOptions, start_server
from murmura.transport.hub import Hub

T = TypeVar("T")


class ServerThread:
    """A ``Hub`` served by ``grpc.aio`` on its own loop; ``call`` runs coroutines on it.

    ``extra`` adds services on the same port, as in ``start_server`` (secure aggregation).
    """

    def __init__(
        self,
        hub: Hub,
        opts: ServerOptions,
        extra: Sequence[Callable[[CoordinatorService], grpc.GenericRpcHandler]] = (),
    ) -> None:
        self.hub = hub
        self.opts = opts
        self.extra = extra
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server: aio.Server | None = None
        self.port = 0

    def __enter__(self) -> ServerThread:
        self._thread.start()
        self._server, self.port = self.call(start_server(self.hub, self.opts, self.extra))
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60.0) -> T:
        """Run ``coro`` on the server loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def target(self) -> str:
        """``host:port`` to dial."""
        return f"{self.opts.host}:{self.port}"

    def stop(self) -> None:
        """Stop the server and the loop."""
        if self._server is not None:
            self.call(self._server.stop(grace=0.5))
            self._server = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self.loop.is_running():
            self.loop.close()
