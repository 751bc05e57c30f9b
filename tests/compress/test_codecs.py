"""Codecs round-trip, the stochastic ones are unbiased, error feedback carries its residual."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from murmura.compress import CODECS, ErrorFeedback, frame, framed_size, make_codec, unframe
from murmura.compress.sparse import kept
from murmura.errors import ConfigError, RegistryError

ALL = [
    ("float16", {}),
    ("bfloat16", {}),
    ("quantize", {"bits": 8, "bucket": 64}),
    ("quantize", {"bits": 4, "bucket": 64}),
    ("qsgd", {"levels": 1, "bucket": 64}),
    ("qsgd", {"levels": 7, "bucket": 64}),
    ("topk", {"ratio": 0.1}),
    ("topkq", {"ratio": 0.1, "bits": 4}),
    ("topkq", {"ratio": 0.3, "bits": 1}),
    ("randk", {"ratio": 0.1}),
    ("sign", {"bucket": 64}),
]
IDS = [f"{n}-{'-'.join(map(str, p.values()))}" for n, p in ALL]
vectors = arrays(
    np.float32,
    st.integers(0, 300),
    elements=st.floats(-1e4, 1e4, allow_nan=False, width=32),
)


@pytest.mark.parametrize(("name", "params"), ALL, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(x=vectors, seed=st.integers(0, 2**32))
def test_round_trip_shape_size_and_frame(
    name: str, params: dict[str, int], x: np.ndarray, seed: int
) -> None:
    codec = make_codec(name, **params)
    blob = frame(codec, codec.encode(x, np.random.default_rng(seed)))
    assert len(blob) == framed_size(codec, x.size)
    y = unframe(codec, blob, x.size)
    assert y.dtype == np.float32 and y.shape == x.shape and np.all(np.isfinite(y))


@pytest.mark.parametrize(("name", "rtol"), [("float16", 1e-3), ("bfloat16", 8e-3)])
@settings(max_examples=30, deadline=None)
@given(
    x=arrays(
        np.float32,
        50,
        elements=st.floats(-6e4, 6e4, width=32).filter(lambda v: v == 0 or abs(v) > 1e-3),
    )
)
def test_half_precision_is_close(name: str, rtol: float, x: np.ndarray) -> None:
    codec = make_codec(name)
    y = codec.decode(codec.encode(x, np.random.default_rng(0)), x.size)
    np.testing.assert_allclose(y, x, rtol=rtol, atol=0)


def test_float16_saturates_instead_of_overflowing() -> None:
    codec = make_codec("float16")
    y = codec.decode(codec.encode(np.array([1e6, -1e6], np.float32), np.random.default_rng()), 2)
    assert list(y) == [65504.0, -65504.0]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("quantize", {"bits": 8, "bucket": 16}),
        ("quantize", {"bits": 4, "bucket": 16}),
        ("qsgd", {"levels": 1, "bucket": 16}),
        ("qsgd", {"levels": 4, "bucket": 16}),
    ],
)
def test_stochastic_quantisers_are_unbiased(name: str, params: dict[str, int]) -> None:
    """The mean of many decodings approaches x at the rate the variance allows (5 sigma)."""
    codec = make_codec(name, **params)
    x = np.random.default_rng(1).normal(size=48).astype(np.float32)
    rng = np.random.default_rng(2)
    draws = np.stack([codec.decode(codec.encode(x, rng), x.size) for _ in range(2000)])
    draws = draws.astype(np.float64)
    err = np.abs(draws.mean(axis=0) - x)
    sem = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(err < 5 * sem + 1e-5), (err / sem).max()
    assert draws.std(axis=0).max() > 0  # really stochastic: a biased rounding would pass too


def test_topk_indices_are_uint16_up_to_65536_values() -> None:
    codec = make_codec("topk", ratio=0.01)
    assert codec.encoded_size(65536) == 6 * 656 and codec.encoded_size(65537) == 8 * 656


def test_topkq_rounds_its_values_without_bias() -> None:
    """Every value kept: the mean of many decodings is x, within 5 of the exact sigmas."""
    codec = make_codec("topkq", ratio=1.0, bits=2)  # levels -1, -1/3, 1/3, 1
    x = np.random.default_rng(1).uniform(-1, 1, size=48).astype(np.float32)
    x[0] = 1.0
    rng = np.random.default_rng(2)
    n = 4000
    mean = np.mean([codec.decode(codec.encode(x, rng), 48) for _ in range(n)], axis=0)
    frac = (x.astype(np.float64) + 1) * 1.5 % 1  # odds of the upper level
    sigma = (2 / 3) * np.sqrt(frac * (1 - frac) / n)
    assert np.all(np.abs(mean - x) <= 5 * sigma + 1e-6)
    assert sigma.max() > 1e-3  # really stochastic


def test_topkq_packs_indices_at_ceil_log2_d_bits() -> None:
    codec = make_codec("topkq", ratio=0.0549, bits=4)  # W1's digits model: 4810 values
    assert codec.encoded_size(4810) == 4 + -(-265 * 13 // 8) + -(-265 * 4 // 8) == 568
    assert make_codec("topk", ratio=0.0549).encoded_size(4810) == 6 * 265  # 2.8x larger
    one = make_codec("topkq", ratio=1.0, bits=8)
    assert one.encoded_size(65536) == 4 + 2 * 65536 + 65536  # 16 bits per index
    assert one.encoded_size(65537) == 4 + -(-65537 * 17 // 8) + 65537


def test_topkq_keeps_the_largest_magnitudes_on_its_levels() -> None:
    x = np.array([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 4.0, 0.05, -0.01, 1.0], np.float32)
    codec = make_codec("topkq", ratio=0.3, bits=1)  # levels -5 and 5
    y = codec.decode(codec.encode(x, np.random.default_rng()), x.size)
    assert list(np.nonzero(y)[0]) == [1, 3, 6] and y[1] == -5.0
    assert set(y[[3, 6]]) <= {-5.0, 5.0}


def test_topk_keeps_the_largest_magnitudes_exactly() -> None:
    x = np.array([0.1, -5.0, 0.2, 3.0, -0.3, 0.0, 4.0, 0.05, -0.01, 1.0], np.float32)
    codec = make_codec("topk", ratio=0.3)
    y = codec.decode(codec.encode(x, np.random.default_rng()), x.size)
    assert list(np.nonzero(y)[0]) == [1, 3, 6] and np.array_equal(y[[1, 3, 6]], x[[1, 3, 6]])


def test_randk_sends_values_at_its_seeds_indices() -> None:
    x = np.arange(1, 101, dtype=np.float32)
    codec = make_codec("randk", ratio=0.05)
    y = codec.decode(codec.encode(x, np.random.default_rng(3)), x.size)
    nz = np.nonzero(y)[0]
    assert len(nz) == kept(0.05, 100) == 5 and np.array_equal(y[nz], x[nz])
    same = codec.decode(codec.encode(x, np.random.default_rng(3)), x.size)
    assert np.array_equal(y, same)  # a shared stream gives a shared mask


def test_sign_sends_signs_times_mean_magnitude() -> None:
    x = np.array([1.0, -3.0, 2.0, -2.0], np.float32)
    codec = make_codec("sign", bucket=4)
    y = codec.decode(codec.encode(x, np.random.default_rng()), 4)
    assert list(y) == [2.0, -2.0, 2.0, -2.0]


@pytest.mark.parametrize(("name", "params"), ALL, ids=IDS)
def test_error_feedback_carries_the_residual(name: str, params: dict[str, int]) -> None:
    """Each round sends x + e_old - e_new, so the sum of decodings tracks the sum of inputs."""
    codec = make_codec(name, **params)
    ef = ErrorFeedback(codec, 200)
    rng = np.random.default_rng(4)
    sent = np.zeros(200, np.float64)
    total = np.zeros(200, np.float64)
    for _ in range(30):
        x = rng.normal(size=200).astype(np.float32)
        before = ef.residual.copy()
        payload, decoded = ef.encode(x, rng)
        np.testing.assert_array_equal(decoded, codec.decode(payload, 200))
        scale = 1e-6 * (1 + np.abs(before).max())  # float32 cancellation
        np.testing.assert_allclose(decoded + ef.residual, x + before, atol=10 * scale)
        sent += decoded
        total += x
    np.testing.assert_allclose(sent + ef.residual, total, atol=300 * scale)
    if codec.biased:  # what was dropped is kept, not lost
        assert np.abs(ef.residual).sum() > 0


def test_error_feedback_state_round_trips_and_refuses_another_size() -> None:
    ef = ErrorFeedback(make_codec("topk", ratio=0.1), 50)
    ef.encode(np.ones(50, np.float32), np.random.default_rng())
    other = ErrorFeedback(make_codec("topk", ratio=0.1), 50)
    other.load_state_dict(ef.state_dict())
    np.testing.assert_array_equal(other.residual, ef.residual)
    with pytest.raises(ValueError, match=r"\(50,\)"):
        ErrorFeedback(make_codec("topk", ratio=0.1), 51).load_state_dict(ef.state_dict())


def test_registry_lists_names_and_bad_params_are_one_line_errors() -> None:
    assert CODECS.names() == [
        "bfloat16", "float16", "qsgd", "quantize", "randk", "sign", "topk", "topkq",
    ]  # fmt: skip
    with pytest.raises(RegistryError, match="valid: bfloat16"):
        make_codec("zip")
    with pytest.raises(ConfigError, match="ratio must be in"):
        make_codec("topk", ratio=2.0)
    with pytest.raises(ConfigError, match="bits must be one of"):
        make_codec("quantize", bits=3)
    with pytest.raises(ConfigError, match="unexpected keyword"):
        make_codec("sign", ratio=0.1)


def test_compression_ratios_for_a_million_values() -> None:
    """What each codec saves on d = 10**6 (the figures the bandwidth planner uses)."""
    d = 10**6
    ratio = {
        f"{n}{p}": 4 * d / framed_size(make_codec(n, **p), d)
        for n, p in [
            ("float16", {}),
            ("quantize", {"bits": 8}),
            ("quantize", {"bits": 4}),
            ("qsgd", {"levels": 1}),
            ("topk", {"ratio": 1 / 64}),
            ("sign", {}),
        ]
    }
    assert list(map(round, ratio.values())) == [2, 4, 8, 16, 32, 32]
