"""CHOCO-gossip on the peer endpoint: framed ``q`` bytes, the codec named and checked; the
public copy itself, float32, to a neighbour that resyncs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from murmura.compress import make_codec, spec
from murmura.compress.base import Codec
from murmura.compress.choco import difference
from murmura.compress.frame import unframe
from murmura.errors import ProtocolError
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.peer_service import Fetched, ModelStore, NeighbourLink, start_peer_server
from murmura.types import Layout

from .conftest import Pki

pytestmark = pytest.mark.network

LAYOUT = Layout(("a", "b"), ((30,), (4, 5)))
TOPK = make_codec("topk", ratio=0.1)


COPY = np.arange(LAYOUT.size, dtype=np.float32)


def _fetch(
    pki: Pki, served: Codec, wire: bytes, agreed: Codec | None, copy: bool = False
) -> Fetched:
    """w1 serves ``wire`` (framed by ``served``) for round 1; w2 fetches it agreeing ``agreed``.

    ``copy``: w2 asks for w1's public copy (``COPY``) instead.
    """

    async def main() -> Fetched:
        store = ModelStore("run-1", "w1", LAYOUT)
        opts = ServerOptions(credentials=pki.creds("w1"), allowlist=frozenset({"w2"}))
        server, port = await start_peer_server(store, opts)
        link = NeighbourLink(
            "w2", "w1", f"127.0.0.1:{port}", "run-1", LAYOUT, pki.creds("w2"), compression=agreed
        )
        try:
            await store.publish_compressed(1, wire, spec(served), COPY)
            return await link.fetch(1, 2.0, copy=copy)
        finally:
            await link.close()
            await server.stop(0)

    return asyncio.run(main())


def test_a_neighbour_gets_the_decoded_difference_and_its_wire_size(pki: Pki) -> None:
    diff = np.random.default_rng(0).normal(size=LAYOUT.size).astype(np.float32)
    wire = difference(TOPK, 7, 1, 0, diff)
    got = _fetch(pki, TOPK, wire, TOPK)
    assert got.weights is not None and got.wire_bytes == len(wire) < 4 * LAYOUT.size / 3
    np.testing.assert_array_equal(got.weights, unframe(TOPK, wire, LAYOUT.size))
    assert np.count_nonzero(got.weights) == 5  # top 10 % of 50 values


def test_a_resyncing_neighbour_gets_the_public_copy_in_float32(pki: Pki) -> None:
    wire = difference(TOPK, 7, 1, 0, np.ones(LAYOUT.size, dtype=np.float32))
    got = _fetch(pki, TOPK, wire, TOPK, copy=True)
    assert got.weights is not None and got.wire_bytes == 4 * LAYOUT.size
    np.testing.assert_array_equal(got.weights, COPY)


@pytest.mark.parametrize("agreed", [make_codec("topk", ratio=0.2), make_codec("sign"), None])
def test_a_difference_in_a_codec_not_agreed_is_refused(pki: Pki, agreed: Codec | None) -> None:
    wire = difference(TOPK, 7, 1, 0, np.ones(LAYOUT.size, dtype=np.float32))
    with pytest.raises(ProtocolError, match="agreed to"):
        _fetch(pki, TOPK, wire, agreed)


def test_a_float32_model_is_refused_by_a_peer_that_agreed_to_choco(pki: Pki) -> None:
    async def main() -> None:
        store = ModelStore("run-1", "w1", LAYOUT)
        opts = ServerOptions(credentials=pki.creds("w1"), allowlist=frozenset({"w2"}))
        server, port = await start_peer_server(store, opts)
        link = NeighbourLink(
            "w2", "w1", f"127.0.0.1:{port}", "run-1", LAYOUT, pki.creds("w2"), compression=TOPK
        )
        try:
            await store.publish(1, np.ones(LAYOUT.size, dtype=np.float32))
            with pytest.raises(ProtocolError, match="dtype '<f4'"):
                await link.fetch(1, 2.0)
        finally:
            await link.close()
            await server.stop(0)

    asyncio.run(main())
