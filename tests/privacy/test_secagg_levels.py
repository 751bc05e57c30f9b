"""Quantised SecAgg+ (issue 18): levels on a public grid, masked and summed mod 2^16.

The masks cancel exactly in the narrower ring (the unmasked sum is the sum of the clients'
encodings, dropouts included), the decoded sum is unbiased, the ring never wraps up to the
client limit and refuses one more, and each masked word costs 2 bytes instead of 4.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.errors import ConfigError
from murmura.privacy.secagg import SecAggConfig, Stage, run_secagg_round
from murmura.privacy.secagg.messages import masked_input_size
from murmura.privacy.secagg.quantize import LevelQuantizer, max_clients


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.6, 0.6, (n, d)), rng.uniform(1.0, 4.0, n)


def _encodings_sum(q: LevelQuantizer, x: np.ndarray, w: np.ndarray, seed: int,
                   clients: object) -> np.ndarray:  # fmt: skip
    """Sum mod 2^16 of the clients' encodings, drawn with the simulation's per-client rng."""
    total = np.zeros(x.shape[1] + 1, dtype=np.uint16)
    for u in clients:  # type: ignore[attr-defined]
        total += q.encode(x[u], float(w[u]), np.random.default_rng([seed, u]))
    return total


def test_masks_cancel_in_the_16_bit_ring_with_dropouts() -> None:
    n, d, seed, bits = 12, 24, 7, 8
    x, w = _data(n, d, seed)
    drops = {Stage.MASKED_INPUT: {2}, Stage.UNMASK: {5}}
    result = run_secagg_round(x, w, dropouts=drops, seed=seed, max_weight=4.0, level_bits=bits)
    assert result.raw_sum.dtype == np.uint16
    assert result.survivors == tuple(u for u in range(n) if u != 2)
    q = LevelQuantizer(n, 1.0, 4.0, bits)
    expected = _encodings_sum(q, x, w, seed, result.survivors)
    np.testing.assert_array_equal(result.raw_sum, expected)
    exact = (w[list(result.survivors), None] * x[list(result.survivors)]).sum(0)
    # stochastic rounding: under one grid step per client and coordinate
    assert np.max(np.abs(result.weighted_sum - exact)) < len(result.survivors) / q.value_scale


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 40),
    seed=st.integers(0, 2**31),
    clip=st.floats(0.05, 5.0),
)
def test_decoded_sum_is_unbiased(n: int, seed: int, clip: float) -> None:
    rng = np.random.default_rng(seed)
    d, draws, w_max = 8, 400, 3.0
    x = rng.uniform(-1.2 * clip, 1.2 * clip, (n, d))  # some beyond the clip
    w = rng.uniform(0.0, w_max, n)
    q = LevelQuantizer(n, clip, w_max, 8)
    true_sum = (w[:, None] * np.clip(x, -clip, clip)).sum(0)
    sums = np.empty((draws, d))
    weights = np.empty(draws)
    for i in range(draws):
        total = np.zeros(d + 1, dtype=np.uint16)
        for u in range(n):
            total += q.encode(x[u], float(w[u]), rng)
        sums[i], weights[i] = q.decode(total)
    # each level's rounding has variance <= 1/4: the mean of `draws` sums is within 5 sigma
    tol = 5 * np.sqrt(n / 4 / draws) / q.value_scale
    assert np.max(np.abs(sums.mean(0) - true_sum)) <= tol
    assert abs(weights.mean() - w.sum()) <= 5 * np.sqrt(n / 4 / draws) / q.weight_scale


def test_the_ring_holds_the_extreme_sum_of_258_clients_and_refuses_one_more() -> None:
    bits = 8
    n = max_clients(bits)
    assert n == 258  # 258 * 127 = 32766 < 2^15
    q = LevelQuantizer(n, 1.0, 2.0, bits)
    rng = np.random.default_rng(0)
    for sign in (1.0, -1.0):
        total = np.zeros(3, dtype=np.uint16)
        for _ in range(n):
            total += q.encode(np.full(2, sign), 2.0, rng)
        values, weight = q.decode(total)
        np.testing.assert_allclose(values, sign * 2.0 * n, rtol=1e-12)  # no wrap-around
        assert weight == pytest.approx(2.0 * n, rel=1 / 300)
    with pytest.raises(ConfigError, match=rf"{n + 1} clients' {bits}-bit levels need \d+ bits"):
        LevelQuantizer(n + 1, 1.0, 2.0, bits)
    with pytest.raises(ConfigError, match=f"holds at most {n} clients"):
        SecAggConfig(num_clients=n + 1, dim=4, neighbours=8, threshold=5, level_bits=bits)


def test_masked_input_takes_two_bytes_a_word_and_the_binding_names_the_ring() -> None:
    n, d = 5, 100
    x, w = _data(n, d, 1)
    plain = run_secagg_round(x, w, seed=1)
    levels = run_secagg_round(x, w, seed=1, level_bits=8)
    header = masked_input_size(0, 4)
    assert masked_input_size(d + 1, 2) == header + 2 * (d + 1)
    # every other message is the same size; only the masked input shrinks, by 2 bytes a word
    assert plain.bytes_sent[0] - levels.bytes_sent[0] == 2 * (d + 1)
    base = SecAggConfig(num_clients=n, dim=d, neighbours=4, threshold=3)
    assert base.binding() == b"murmura-secagg/v1|" + bytes(8) + b"|"  # unquantised: unchanged
    assert b"|q8|" in SecAggConfig(num_clients=n, dim=d, neighbours=4, threshold=3,
                                   level_bits=8).binding()  # fmt: skip


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_fewer_bits_are_refused_as_they_save_nothing_in_the_ring(bits: int) -> None:
    with pytest.raises(ConfigError, match=f"got {bits} bits"):
        LevelQuantizer(3, 1.0, 1.0, bits)
