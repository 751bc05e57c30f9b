"""SecAgg+ building blocks: quantiser, Shamir wrapper, graph, PRG, wire codec, config."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ConfigError, ProtocolError
from murmura.privacy.secagg import SecAggConfig, default_neighbours, default_threshold, shamir
from murmura.privacy.secagg.crypto import prg
from murmura.privacy.secagg.graph import neighbour_graph
from murmura.privacy.secagg.messages import (
    AdvertiseKeys,
    EncryptedShares,
    MaskedInput,
    Message,
    RevealedShare,
    ShareKeys,
    UnmaskRequest,
    UnmaskResponse,
    decode,
    decode_as,
    encode,
)
from murmura.privacy.secagg.quantize import Quantizer


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    clip=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**32 - 1),
)
def test_sum_of_quantised_vectors_never_wraps_and_decodes_close(
    n: int, clip: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2 * clip, 2 * clip, size=(n, 8))
    w = rng.uniform(0.0, 3.0, size=n)
    x[0] = clip * 5  # extremes: clipped to +c with the largest weight
    q = Quantizer(n, clip, max_weight=3.0)
    total = np.zeros(9, dtype=np.uint32)
    for u in range(n):
        total += q.encode(x[u], w[u], rng)
    values, weight = q.decode(total)
    exact = (w[:, None] * np.clip(x, -clip, clip)).sum(axis=0)
    assert np.all(np.abs(values - exact) <= n / q.value_scale)
    assert abs(weight - w.sum()) <= n / q.weight_scale


def test_worst_case_sums_fit_in_int32() -> None:
    n = 50
    q = Quantizer(n, 1.0, 2.0)
    for sign in (1.0, -1.0):
        total = np.zeros(3, dtype=np.uint32)
        for _ in range(n):
            total += q.encode(np.full(2, sign), 2.0, np.random.default_rng(0))
        values, weight = q.decode(total)
        np.testing.assert_allclose(values, sign * 2.0 * n, rtol=1e-6)
        assert weight == pytest.approx(2.0 * n)


@pytest.mark.parametrize(("t", "m"), [(1, 3), (2, 3), (5, 9), (9, 17)])
def test_any_t_shares_rebuild_the_secret(t: int, m: int) -> None:
    secret = bytes(range(16))
    shares = shamir.split(secret, t, m)
    assert sorted(shares) == list(range(1, m + 1))
    for subset in itertools.islice(itertools.combinations(sorted(shares), t), 5):
        assert shamir.combine({i: shares[i] for i in subset}, t) == secret
    if t > 1:
        fewer = {i: shares[i] for i in list(shares)[: t - 1]}
        with pytest.raises(ValueError):
            shamir.combine(fewer, t)
        if t > 2:
            assert shamir.combine(fewer, t - 1) != secret


def test_shamir_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 2, 3)
    with pytest.raises(ValueError):
        shamir.split(bytes(16), 4, 3)


@pytest.mark.parametrize(("n", "k"), [(5, 4), (20, 6), (21, 20), (200, 16)])
def test_graph_is_symmetric_k_regular_and_seeded(n: int, k: int) -> None:
    graph = neighbour_graph(n, k, seed=3)
    for u, vs in graph.items():
        assert len(vs) == k and u not in vs and len(set(vs)) == k
        assert all(u in graph[v] for v in vs)
    assert graph == neighbour_graph(n, k, seed=3)
    if k < n - 1:
        assert graph != neighbour_graph(n, k, seed=4)


def test_default_neighbours_grow_logarithmically_and_threshold_is_a_majority() -> None:
    assert default_neighbours(5) == 4
    assert default_neighbours(100) == 14
    assert default_neighbours(10_000) == 28
    for k in (4, 14, 28):
        t = default_threshold(k)
        assert 2 * t > k + 1 >= t  # strict majority of the closed neighbourhood


def test_prg_is_deterministic_and_looks_uniform() -> None:
    a = prg(bytes(32), 100_000)
    assert a.dtype == np.uint32 and a.shape == (100_000,)
    np.testing.assert_array_equal(a, prg(bytes(32), 100_000))
    assert not np.array_equal(a[:10], prg(b"\x01" + bytes(31), 10))
    assert abs(a.astype(np.float64).mean() / 2**32 - 0.5) < 0.01
    with pytest.raises(ValueError):
        prg(bytes(8), 4)


MESSAGES: list[Message] = [
    AdvertiseKeys(3, b"e" * 32, b"m" * 32, b"s" * 64),
    ShareKeys(1, (EncryptedShares(1, 2, b"ct"), EncryptedShares(1, 4, b"")), (7, 9)),
    MaskedInput(2, np.arange(5, dtype="<u4").tobytes()),
    UnmaskRequest(0, (1, 2), ()),
    UnmaskResponse(5, (RevealedShare(1, 2, b"x" * 16),), ()),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_wire_codec_round_trips(msg: Message) -> None:
    wire = encode(msg)
    assert decode(wire) == msg
    assert decode_as(wire, type(msg)) == msg
    with pytest.raises(ProtocolError):
        decode(wire[:-1])
    with pytest.raises(ProtocolError):
        decode(wire + b"\x00")


def test_wire_codec_refuses_unknown_versions_tags_and_kinds() -> None:
    wire = encode(MESSAGES[0])
    with pytest.raises(ProtocolError):
        decode(b"\x09" + wire[1:])
    with pytest.raises(ProtocolError):
        decode(wire[:1] + b"\xff" + wire[2:])
    with pytest.raises(ProtocolError):
        decode_as(wire, MaskedInput)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_clients": 1, "neighbours": 1, "threshold": 1},
        {"num_clients": 10, "neighbours": 3, "threshold": 2},
        {"num_clients": 10, "neighbours": 10, "threshold": 2},
        {"num_clients": 10, "neighbours": 4, "threshold": 6},
        {"num_clients": 10, "neighbours": 4, "threshold": 0},
        {"num_clients": 10, "neighbours": 4, "threshold": 2, "clip": 0.0},
    ],
)
def test_config_refuses_invalid_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SecAggConfig(dim=4, **kwargs)
