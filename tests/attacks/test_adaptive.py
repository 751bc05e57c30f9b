"""Each adaptive attack against its paper's definition, on hand-made honest updates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import krum_select, make_aggregator
from murmura.attacks import AttackContext, RoundView, make_attack
from murmura.attacks.adaptive import (
    SCALES,
    fang_krum_update,
    fang_trimmed_mean_update,
    largest_scale,
    line_search,
    mimic_update,
    min_max_update,
    min_sum_update,
)
from murmura.attacks.omniscient import alie_update, ipm_update
from murmura.errors import ConfigError

# three honest updates: mean (2/3, 2/3), unit perturbation p = (1, 1) / sqrt(2)
TRIANGLE = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]], np.float32)


def test_the_binary_search_finds_the_largest_passing_scale() -> None:
    assert largest_scale(lambda g: g <= 3.3) == pytest.approx(3.3, abs=1e-4)
    assert largest_scale(lambda g: g <= 17.0) == pytest.approx(17.0, abs=1e-4)  # past init
    assert largest_scale(lambda g: False) == 0.0


def test_min_max_stays_within_the_largest_honest_distance() -> None:
    # m = t (1, 1); max distance sqrt((t - 2)^2 + t^2) = 2 sqrt 2 (the honest diameter)
    # gives t^2 - 2t - 2 = 0, t = 1 - sqrt 3
    t = 1 - math.sqrt(3)
    np.testing.assert_allclose(min_max_update(TRIANGLE), [t, t], atol=1e-4)


def test_min_sum_stays_within_the_largest_honest_sum_of_squares() -> None:
    # sum_i ||m - g_i||^2 = 6t^2 - 8t + 8 <= max_i sum_j ||g_i - g_j||^2 = 12: 3t^2 - 4t - 2 = 0
    t = (4 - math.sqrt(40)) / 6
    np.testing.assert_allclose(min_sum_update(TRIANGLE), [t, t], atol=1e-4)


def test_min_max_deviations_follow_the_paper() -> None:
    honest = np.array([[1.0, -1.0], [3.0, -3.0]], np.float32)  # mean (2, -2), std (1, 1)
    for kind in ("sign", "std"):
        out = min_max_update(honest, kind)  # type: ignore[arg-type]
        dev = np.sign([2.0, -2.0]) if kind == "sign" else np.ones(2)
        gamma = (2.0 - out[0]) / dev[0]
        np.testing.assert_allclose(out, np.array([2.0, -2.0]) - gamma * dev, atol=1e-5)
        assert np.abs(honest - out).sum(1).max() > 0
    with pytest.raises(ConfigError, match="deviation"):
        make_attack("min_max", AttackContext(5, 5, 1.0, 0), {"deviation": "nope"})


def test_min_max_strongest_sends_the_deviation_that_moves_the_rule_most() -> None:
    rng = np.random.default_rng(3)
    honest = (rng.standard_normal((8, 5)) * [1.0, 0.1, 0.1, 3.0, 0.1] + 1.0).astype(np.float32)
    ctx = AttackContext(10, 10, 1.0, 0, aggregator="coordinate_median")
    view = RoundView(0, honest, honest[0], 2)
    median = make_aggregator("coordinate_median")
    mu = median(honest, np.ones(8, np.float32))  # the rule on the honest updates alone

    def gap(m: np.ndarray) -> float:
        rows = np.vstack([honest, m, m]).astype(np.float32)
        return float(np.linalg.norm(median(rows, np.ones(10, np.float32)) - mu))

    gaps = {k: gap(min_max_update(honest, k)) for k in ("unit_vec", "sign", "std")}
    sent = make_attack("min_max", ctx, {"deviation": "strongest"}).forge(view)
    assert gap(sent) == pytest.approx(max(gaps.values()))
    assert max(gaps.values()) > min(gaps.values()) + 0.01  # the choice matters here
    for kind in ("unit_vec", "sign", "std"):
        fixed = make_attack("min_max", ctx, {"deviation": kind}).forge(view)
        np.testing.assert_array_equal(fixed, min_max_update(honest, kind))  # type: ignore[arg-type]


@given(st.integers(0, 2**31 - 1))
@settings(max_examples=20, deadline=None)
def test_fang_trimmed_mean_sits_just_past_the_honest_extremes(seed: int) -> None:
    honest = np.array([[1.0, -1.0, 4.0], [2.0, -3.0, -2.0], [3.0, -2.0, -5.0]], np.float32)
    out = fang_trimmed_mean_update(honest, np.random.default_rng(seed), b=2.0)
    # mean up (s > 0), w_min = 1 > 0: [w_min / b, w_min] = [0.5, 1]
    assert 0.5 <= out[0] <= 1.0
    # mean down (s < 0), w_max = -1 <= 0: [w_max / b, w_max] = [-1, -0.5]
    assert -1.0 <= out[1] <= -0.5
    # mean down, w_max = 4 > 0: [w_max, b w_max] = [4, 8]
    assert 4.0 <= out[2] <= 8.0


def test_fang_krum_is_the_largest_halving_krum_selects() -> None:
    rng = np.random.default_rng(0)
    # noisy honest updates around a small mean, as local updates are around the global model
    honest = (np.array([0.2, -0.2, 0.1, 0.3]) + rng.normal(size=(8, 4))).astype(np.float32)
    c, f = 2, 2
    out = fang_krum_update(honest, c, f)
    s = np.sign(honest.mean(axis=0))
    lam = float(-out[0] / s[0])
    np.testing.assert_allclose(out, -lam * s, rtol=1e-6)

    def picked(v: np.ndarray) -> bool:
        rows = np.vstack([honest, np.repeat(v[None, :], c, 0)]).astype(np.float32)
        return int(krum_select(rows, f)[0]) >= len(honest)

    assert picked(out) and lam > 1e-3
    d, m = 4, len(honest) + c
    dist = np.sqrt(((honest[:, None, :] - honest[None, :, :]) ** 2).sum(-1))
    nearest = np.sort(dist, axis=1)[:, 1 : m - c - 2 + 1].sum(1).min()
    bound = nearest / ((m - 2 * c - 1) * d) + np.linalg.norm(honest, axis=1).max() / np.sqrt(d)
    halvings = math.log2(bound / lam)
    assert halvings == pytest.approx(round(halvings), abs=1e-6)  # bound / 2^k
    if round(halvings) > 0:
        assert not picked((-2 * lam * s).astype(np.float32))  # one halving fewer fails


def test_mimic_copies_the_honest_update_furthest_along_the_top_direction() -> None:
    honest = np.array([[0.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [5.0, 0.2]], np.float32)
    np.testing.assert_array_equal(mimic_update(honest), honest[3])
    same = np.ones((3, 2), np.float32)
    np.testing.assert_array_equal(mimic_update(same), same[0])


def test_mimic_keeps_copying_the_worker_it_chose_in_the_warm_up() -> None:
    # round 0: c lies furthest along the top direction; round 1: a does, but c is kept
    first = np.array([[0.0, 0.0], [1.0, 0.1], [5.0, 0.2], [-1.0, 0.0]], np.float32)
    second = np.array([[9.0, 0.0], [1.0, 0.1], [0.5, 0.2], [-1.0, 0.0]], np.float32)
    nodes = ("a", "b", "c", "d")

    def sent(attack: object, round_: int, honest: np.ndarray, k: int = 4) -> np.ndarray:
        view = RoundView(round_, honest[:k], honest[0], 2, nodes[:k])
        out: np.ndarray = attack.forge(view)  # type: ignore[attr-defined]
        return out

    mimic = make_attack("mimic", AttackContext(6, 6, 1.0, 0), {})
    np.testing.assert_array_equal(sent(mimic, 0, first), first[2])
    np.testing.assert_array_equal(sent(mimic, 1, second), second[2])
    # the target gone from a round: that round's most outlying worker, the target kept
    np.testing.assert_array_equal(sent(mimic, 2, second, k=2), second[0])
    np.testing.assert_array_equal(sent(mimic, 3, second), second[2])
    # a warm-up of two rounds keeps the second round's choice
    longer = make_attack("mimic", AttackContext(6, 6, 1.0, 0), {"warmup": 2})
    sent(longer, 0, first)
    sent(longer, 1, second)
    np.testing.assert_array_equal(sent(longer, 2, first), first[0])
    with pytest.raises(ConfigError, match="warmup"):
        make_attack("mimic", AttackContext(6, 6, 1.0, 0), {"warmup": 0})


def test_optimised_alie_and_ipm_pick_the_most_damaging_scale_on_the_grid() -> None:
    honest = np.random.default_rng(2).normal(size=(9, 6)).astype(np.float32)
    mu = honest.mean(0)
    for name in ("coordinate_median", "trimmed_mean"):
        rule = make_aggregator(name, **({"beta": 0.2} if name == "trimmed_mean" else {}))
        for craft in (lambda z: alie_update(honest, z), lambda e: ipm_update(honest, e)):
            got = line_search(honest, 2, craft, rule)

            def gap(v: np.ndarray, rule=rule) -> float:  # noqa: B008
                rows = np.vstack([honest, v, v]).astype(np.float32)
                return float(np.linalg.norm(rule(rows, np.ones(11, np.float32)) - mu))

            assert gap(got) == pytest.approx(max(gap(craft(s)) for s in SCALES))
    ctx = AttackContext(10, 10, 1.0, 0, aggregator="weighted_mean")
    view = RoundView(1, honest, honest[0], 2)
    ipm = make_attack("ipm_opt", ctx, {})
    # against the mean more is always worse: the largest epsilon on the grid
    np.testing.assert_allclose(ipm.forge(view), ipm_update(honest, SCALES[-1]), rtol=1e-6)  # type: ignore[attr-defined]


def test_the_line_search_weighs_the_rows_as_the_rule_in_use_does() -> None:
    honest = np.random.default_rng(0).normal(size=(7, 4)).astype(np.float32)
    weights = np.array([1, 1, 1, 1, 1, 1, 1, 9, 9], np.float32)  # two heavy attackers
    rule = make_aggregator("coordinate_median", weighted=True)
    mu = honest.mean(0)

    def gap(z: float, w: np.ndarray) -> float:
        v = alie_update(honest, z)
        return float(np.linalg.norm(rule(np.vstack([honest, v, v]), w) - mu))

    def craft(z: float) -> np.ndarray:
        return alie_update(honest, z)

    weighed = line_search(honest, 2, craft, rule, weights=weights)
    equal = line_search(honest, 2, craft, rule)
    best = max(SCALES, key=lambda z: gap(z, weights))
    np.testing.assert_array_equal(weighed, alie_update(honest, best))
    assert not np.allclose(weighed, equal)  # equal weights would have picked another scale
    ctx = AttackContext(10, 10, 1.0, 0, "coordinate_median", {"weighted": True})
    view = RoundView(1, honest, honest[0], 2, weights=weights)
    np.testing.assert_array_equal(make_attack("alie_opt", ctx, {}).forge(view), weighed)  # type: ignore[attr-defined]


def test_fang_krum_takes_f_from_the_rule_in_use() -> None:
    ctx = AttackContext(100, 100, 1.0, 0, aggregator="krum", aggregator_args={"f": 7})
    assert make_attack("fang_krum", ctx, {}).f == 7  # type: ignore[attr-defined]
    plain = AttackContext(100, 50, 1.0, 0, num_attackers=20)
    assert make_attack("fang_krum", plain, {}).f == 10  # type: ignore[attr-defined]
