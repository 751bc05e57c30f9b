"""The Strategy base: defaults, a forwarding Wrapper, and wrappers that compose as black boxes.

Central DP and secure aggregation wrap any strategy whose round is the linear pipeline
(weighted mean, then a server step) through ``linear_refusal``/``client_clip``/``release``
only: here around ``HalfStep``, a rule that is no FedAvg and that neither wrapper knows.
"""

from __future__ import annotations

import numpy as np
import pytest

from murmura.aggregate import make_aggregator
from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import ConfigError
from murmura.privacy.accountant import create_accountant
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.mechanisms import CentralDP
from murmura.strategy import FedAvg
from murmura.strategy.base import StrategyBase, Sum, Wrapper
from murmura.strategy.dp import Accounted, DifferentiallyPrivate
from murmura.strategy.scaffold import Scaffold
from murmura.strategy.secure import SecAggParams, SecureAggregation
from murmura.types import Vector

ROWS = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0], [-1.0, 1.0, 2.0]], np.float32)
COUNTS = [10, 30, 60]
START = np.array([0.5, 0.5, -0.5], np.float32)


class HalfStep(StrategyBase):
    """A linear rule of its own: the weighted mean, then half a step towards it."""

    @property
    def keep_rows(self) -> bool:
        return False

    def linear_refusal(self) -> str | None:
        return None

    def release(self, round_: int, weights: Vector, total: Sum | None, weight: float) -> Vector:
        if total is None:
            return weights
        return (weights + 0.5 * np.asarray(total) / weight).astype(np.float32)


def _buffer() -> UpdateBuffer:
    buf = UpdateBuffer(3, 3, keep_rows=True)
    for i, (row, n) in enumerate(zip(ROWS, COUNTS, strict=True)):
        buf.add(f"n{i}", row, n, {})
    return buf


def _budget() -> PrivacyBudget:
    return PrivacyBudget(
        create_accountant("rdp"), noise_multiplier=1.0, sample_rate=1.0, delta=1e-5
    )


def test_the_defaults_run_every_node_and_keep_no_state_or_budget() -> None:
    s = StrategyBase()
    assert s.sample(1, ["a", "b"]) == ["a", "b"] and s.configure(1, START) == {}
    assert s.aggregate(1, START, _buffer(), []) is None  # the model is kept
    assert s.evaluate(1, START) is None and s.sample_evaluate(1, ["a"]) == []
    assert s.state_dict() is None and not s.should_stop(1) and s.round_metrics(1) == {}
    assert s.linear_refusal() == "StrategyBase does not combine updates as a weighted mean"


def test_a_wrapper_forwards_everything_it_does_not_override() -> None:
    inner = FedAvg(fraction=0.5, min_clients=2, seed=3)
    w = Wrapper(inner)
    nodes = [f"n{i}" for i in range(6)]
    assert w.sample(2, nodes) == inner.sample(2, nodes)
    assert (w.fraction, w.min_results, w.keep_rows) == (0.5, 2, False)
    np.testing.assert_array_equal(
        w.aggregate(1, START, _buffer(), []), inner.aggregate(1, START, _buffer(), [])
    )


def test_secure_aggregation_releases_the_sum_to_a_rule_it_does_not_know() -> None:
    mean = (np.array(COUNTS, np.float64) @ ROWS) / sum(COUNTS)
    plain = HalfStep().release(1, START, mean, 1.0)
    s = SecureAggregation(HalfStep(), SecAggParams(clip=4.0, max_weight=100.0, seed=1))
    got = s.aggregate(1, START, _buffer(), [])
    assert got is not None
    np.testing.assert_allclose(got, plain, atol=1e-4)  # only quantisation differs
    assert not np.allclose(got, START + mean, atol=1e-2)  # HalfStep's half step, not FedAvg's


def test_central_dp_clips_weighs_and_noises_for_a_rule_it_does_not_know() -> None:
    dp = DifferentiallyPrivate(HalfStep(), CentralDP(1.0, 0.0, 3.0), _budget())
    norms = np.linalg.norm(ROWS, axis=1, keepdims=True)
    clipped_mean = (ROWS / np.maximum(norms, 1.0)).sum(axis=0) / 3.0  # weight 1, q N = 3
    got = dp.aggregate(1, START, _buffer(), [])
    np.testing.assert_allclose(got, START + 0.5 * clipped_mean, rtol=1e-6)
    assert dp.round_metrics(1)["epsilon"] == pytest.approx(_spent_once())
    secure = SecureAggregation(Accounted(dp, []), SecAggParams(clip=4.0, seed=1))
    assert secure.clip is not None and secure.clip.clip_norm == 1.0  # asked, not looked up


def _spent_once() -> float:
    budget = _budget()
    budget.spend()
    return budget.epsilon


@pytest.mark.parametrize(
    ("inner", "why"),
    [
        (FedAvg(aggregator=make_aggregator("krum")), "aggregator 'krum' needs every client"),
        (Scaffold(), "SCAFFOLD's control variates"),
        (StrategyBase(), "does not combine updates as a weighted mean"),
    ],
)
def test_a_rule_outside_the_linear_pipeline_is_refused_with_its_reason(
    inner: StrategyBase, why: str
) -> None:
    with pytest.raises(ConfigError, match=f"secure aggregation needs .*{why}"):
        SecureAggregation(inner, SecAggParams())
    with pytest.raises(ConfigError, match=f"central DP needs .*{why}"):
        DifferentiallyPrivate(inner, CentralDP(1.0, 1.0, 3.0), _budget())


def test_too_few_valid_results_for_the_rule_keep_the_model_and_say_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bulyan with f = 1 needs 7 rows; 3 valid results (others rejected) keep the model."""
    s = FedAvg(min_clients=2, aggregator=make_aggregator("bulyan", f=1))
    with caplog.at_level("WARNING"):
        assert s.aggregate(4, START, _buffer(), []) is None
    assert "round 4: 3 valid results: " in caplog.text and "4f + 3" in caplog.text
    median = FedAvg(min_clients=2, aggregator=make_aggregator("coordinate_median"))
    got = median.aggregate(4, START, _buffer(), [])
    np.testing.assert_allclose(got, START + np.median(ROWS, axis=0), rtol=1e-6)
