"""SecAgg+ end to end: exact sums under dropouts at every stage, and clean aborts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from murmura.privacy.secagg import SecAggAbort, Stage, default_neighbours, run_secagg_round
from murmura.privacy.secagg import shamir as shamir_module
from murmura.privacy.secagg.graph import neighbour_graph
from murmura.privacy.secagg.quantize import Quantizer


def _data(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    updates = rng.normal(0.0, 0.5, size=(n, d)).astype(np.float32)
    weights = rng.integers(1, 100, size=n).astype(np.float64)
    return updates, weights


def _dropouts(n: int, rate: float, stages: list[Stage], seed: int) -> dict[Stage, set[int]]:
    """``rate`` of the clients still present drop at each of ``stages``."""
    rng = np.random.default_rng(seed + 1000)
    present, out = list(range(n)), {}
    for stage in stages:
        gone = rng.choice(present, size=int(round(rate * len(present))), replace=False)
        out[stage] = {int(u) for u in gone}
        present = [u for u in present if u not in out[stage]]
    return out


def _safe_threshold(n: int, k: int, seed: int, dropouts: dict[Stage, set[int]]) -> int:
    """The largest t <= k/3 + 1 that every closed neighbourhood keeps after all dropouts."""
    graph = neighbour_graph(n, k, seed)
    gone = set().union(*dropouts.values()) if dropouts else set()
    # A dropped client's own share is lost too, but its mask key may still be needed.
    worst = min(len({*graph[u], u} - gone) for u in range(n))
    return max(1, min(k // 3 + 1, worst))


def _quantised_sum(
    updates: np.ndarray, weights: np.ndarray, clients: Iterable[int], max_weight: float
) -> np.ndarray:
    q = Quantizer(len(updates), 1.0, max_weight, stochastic=False)
    total = np.zeros(updates.shape[1] + 1, dtype=np.uint32)
    for u in clients:
        total += q.encode(updates[u], weights[u])
    return total


# n = 200 runs take seconds each on a loaded machine: the default run covers 0%, 10% at every
# stage at once and 30% where the dropped clients' keys must be rebuilt; ``-m slow`` runs the
# rest of the n = 200 matrix.
def _marks(n: int, rate: float, stage: Stage) -> list[pytest.MarkDecorator]:
    fast = n < 200 or (rate, stage) == (0.3, Stage.MASKED_INPUT)
    return [] if fast else [pytest.mark.slow]


CASES = [
    pytest.param(n, rate, [stage], marks=_marks(n, rate, stage), id=f"{n}-{rate}-{stage.name}")
    for n in (5, 20, 50, 200) for rate in (0.1, 0.3) for stage in Stage
]  # fmt: skip
CASES += [pytest.param(n, 0.0, [], id=f"{n}-none") for n in (5, 20, 50, 200)]
CASES += [pytest.param(n, 0.1, list(Stage), id=f"{n}-0.1-all") for n in (20, 50, 200)]


@pytest.mark.parametrize(("n", "rate", "stages"), CASES)
def test_unmasked_sum_is_exactly_the_quantised_sum(
    n: int, rate: float, stages: list[Stage]
) -> None:
    d = 16 if n == 200 else 32
    updates, weights = _data(n, d, seed=n)
    k = default_neighbours(n)
    drops = _dropouts(n, rate, stages, seed=n)
    t = _safe_threshold(n, k, n, drops)
    result = run_secagg_round(updates, weights, threshold=t, neighbours=k, dropouts=drops,
                              seed=n, rounding="deterministic")
    gone_before_input = set().union(*(drops.get(s, set()) for s in Stage if s < Stage.UNMASK))
    assert set(result.survivors) == set(range(n)) - gone_before_input
    expected = _quantised_sum(updates, weights, result.survivors, float(weights.max()))
    np.testing.assert_array_equal(result.raw_sum, expected)
    assert result.excluded == {}


def test_dequantised_result_is_the_weighted_sum_within_quantisation_error() -> None:
    n, d = 30, 64
    updates, weights = _data(n, d, seed=11)
    drops = {Stage.MASKED_INPUT: {3, 4}, Stage.UNMASK: {5}}
    result = run_secagg_round(updates, weights, threshold=5, dropouts=drops, seed=2)
    survivors = list(result.survivors)
    clipped = np.clip(updates[survivors].astype(np.float64), -1.0, 1.0)
    exact = (weights[survivors, None] * clipped).sum(axis=0)
    q = Quantizer(n, 1.0, float(weights.max()))
    # Stochastic rounding: at most one unit per client and coordinate.
    assert np.max(np.abs(result.weighted_sum - exact)) <= len(survivors) / q.value_scale
    assert abs(result.total_weight - weights[survivors].sum()) <= len(survivors) / q.weight_scale
    mean = result.weighted_sum / result.total_weight
    np.testing.assert_allclose(mean, exact / weights[survivors].sum(), atol=1e-6)


def test_defaults_survive_ten_percent_dropouts_before_input() -> None:
    n = 30
    updates, weights = _data(n, 16, seed=4)
    result = run_secagg_round(updates, weights, dropouts={Stage.MASKED_INPUT: {1, 12, 25}},
                              rounding="deterministic")
    assert len(result.survivors) == n - 3
    np.testing.assert_array_equal(
        result.raw_sum, _quantised_sum(updates, weights, result.survivors, float(weights.max()))
    )


def test_complete_graph_tolerates_n_minus_t_dropouts_after_upload_and_aborts_one_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n, t = 10, 6
    updates, weights = _data(n, 16, seed=5)
    ok = run_secagg_round(updates, weights, threshold=t, neighbours=n - 1,
                          dropouts={Stage.UNMASK: {0, 1, 2, 3}}, rounding="deterministic")
    assert ok.survivors == tuple(range(n))
    np.testing.assert_array_equal(
        ok.raw_sum, _quantised_sum(updates, weights, range(n), float(weights.max()))
    )
    combined: list[object] = []

    def spy(*args: object) -> bytes:
        combined.append(args)
        return b""

    monkeypatch.setattr(shamir_module, "combine", spy)
    with pytest.raises(SecAggAbort, match="fewer than t=6") as info:
        run_secagg_round(updates, weights, threshold=t, neighbours=n - 1,
                         dropouts={Stage.UNMASK: {0, 1, 2, 3, 4}})
    assert info.value.stage == "unmask"
    assert combined == []  # the server reconstructed nothing


@pytest.mark.parametrize("stage", list(Stage))
def test_below_threshold_aborts_at_any_stage_without_reconstructing(
    stage: Stage, monkeypatch: pytest.MonkeyPatch
) -> None:
    n, k, t = 20, 6, 5
    updates, weights = _data(n, 16, seed=9)
    graph = neighbour_graph(n, k, 0)
    victims = set(graph[0][:3])  # client 0 keeps itself and 3 of its 6 neighbours: 4 < t
    combined: list[object] = []

    def spy(*args: object) -> bytes:
        combined.append(args)
        return b""

    monkeypatch.setattr(shamir_module, "combine", spy)
    with pytest.raises(SecAggAbort):
        run_secagg_round(updates, weights, threshold=t, neighbours=k, dropouts={stage: victims})
    assert combined == []
