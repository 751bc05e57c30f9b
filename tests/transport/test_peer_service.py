"""The peer endpoint (``murmura.v1.Peer``): round-bound long-poll, identities, deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import pytest

from murmura.errors import IdentityError
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.peer_service import ModelStore, NeighbourLink, start_peer_server
from murmura.types import Layout

from .conftest import Pki

pytestmark = pytest.mark.network

LAYOUT = Layout(("a", "b"), ((3,), (2, 2)))
Body = Callable[[ModelStore, Callable[..., NeighbourLink]], Awaitable[None]]


def _vec(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(LAYOUT.size).astype(np.float32)


def _serve(pki: Pki, body: Body, neighbours: frozenset[str] = frozenset({"w2", "w3"})) -> None:
    """Serve w1's store to ``neighbours`` and run ``body(store, make_link)`` against it."""

    async def main() -> None:
        store = ModelStore("run-1", "w1", LAYOUT)
        opts = ServerOptions(credentials=pki.creds("w1"), allowlist=neighbours, chunk_size=8)
        server, port = await start_peer_server(store, opts)
        links: list[NeighbourLink] = []

        def link(me: str = "w2", expect: str = "w1", run_id: str = "run-1") -> NeighbourLink:
            out = NeighbourLink(me, expect, f"127.0.0.1:{port}", run_id, LAYOUT, pki.creds(me))
            links.append(out)
            return out

        try:
            await body(store, link)
        finally:
            for x in links:
                await x.close()
            await server.stop(0)

    asyncio.run(main())


def test_neighbour_gets_the_round_it_asks_for_and_long_polls_the_next(pki: Pki) -> None:
    async def body(store: ModelStore, link: Callable[..., NeighbourLink]) -> None:
        await store.publish(1, _vec(1))
        got = await link().fetch(1, 1.0)
        assert got.round == 1 and got.latest_round == 1 and got.weights is not None
        np.testing.assert_array_equal(got.weights, _vec(1))

        async def later() -> None:
            await asyncio.sleep(0.2)
            await store.publish(2, _vec(2))

        task = asyncio.create_task(later())
        got = await link("w3").fetch(2, 5.0)
        await task
        assert got.weights is not None
        np.testing.assert_array_equal(got.weights, _vec(2))
        assert store.fetched == {"w2": 1, "w3": 2}

    _serve(pki, body)


def test_a_round_no_longer_kept_or_not_yet_published_says_where_the_peer_is(pki: Pki) -> None:
    async def body(store: ModelStore, link: Callable[..., NeighbourLink]) -> None:
        for r in range(1, 6):
            await store.publish(r, _vec(r))
        old = await link().fetch(1, 1.0)
        assert old.weights is None and old.latest_round == 5
        t0 = time.monotonic()
        ahead = await link().fetch(9, 0.3)
        assert ahead.weights is None and ahead.latest_round == 5
        assert time.monotonic() - t0 < 1.5  # the long-poll ends at its deadline

    _serve(pki, body)


def test_a_peer_that_is_not_a_neighbour_is_denied(pki: Pki) -> None:
    async def body(store: ModelStore, link: Callable[..., NeighbourLink]) -> None:
        await store.publish(1, _vec(1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await link("outsider").fetch(1, 1.0)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert store.fetched == {}

    _serve(pki, body)


def test_another_run_is_refused(pki: Pki) -> None:
    async def body(store: ModelStore, link: Callable[..., NeighbourLink]) -> None:
        await store.publish(1, _vec(1))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await link(run_id="run-2").fetch(1, 1.0)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    _serve(pki, body)


def test_the_dialer_checks_the_neighbours_certificate_name(pki: Pki) -> None:
    async def body(store: ModelStore, link: Callable[..., NeighbourLink]) -> None:
        await store.publish(1, _vec(1))
        with pytest.raises(IdentityError, match="named 'w1', not the worker certificate of"):
            await link(expect="w3").fetch(1, 1.0)  # w1 answers where w3 was expected
        assert store.fetched == {}

    _serve(pki, body)


def test_no_tls_only_on_loopback_and_only_when_asked() -> None:
    from murmura.errors import ConfigError

    async def main() -> None:
        store = ModelStore("run-1", "w1", LAYOUT)
        for opts in (ServerOptions(), ServerOptions(host="0.0.0.0", insecure=True)):
            with pytest.raises(ConfigError):
                await start_peer_server(store, opts)
        with pytest.raises(ConfigError):
            NeighbourLink("w2", "w1", "10.1.2.3:7000", "run-1", LAYOUT, None)

    asyncio.run(main())
