"""The attack suite: wrappers, seeded selection, the omniscient hook, and rejection."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate import make_aggregator
from murmura.attacks import (
    AttackContext,
    attack_client,
    choose_byzantine,
    make_attack,
    wrap_byzantine,
)
from murmura.attacks.clients import PoisonedData
from murmura.attacks.omniscient import alie_update, alie_z_max, ipm_update
from murmura.client import Client
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import STRATEGIES
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

CTX = AttackContext(num_clients=5, cohort_size=5, server_lr=1.0, seed=0)


def attacker(kind: str, inner: Client, **params: object) -> Client:
    """``inner`` turned into attack ``kind``, as the builders do."""
    return attack_client(inner, make_attack(kind, CTX, params))


class Fixed:
    """A client that always returns the same update."""

    def __init__(self, node_id: str, update: Sequence[float], n: int = 10) -> None:
        self.node_id, self.update, self.n = node_id, np.asarray(update, np.float32), n

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(self.update.copy(), self.n, {"train_loss": 0.0})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, self.n)


def _simulate(clients: list[Client], dim: int = 2) -> tuple[Vector, list[str]]:
    """One FedAvg round (examples-weighted mean, lr 1) from zero; the delta and failed nodes."""
    sim = Simulation(STRATEGIES.get("fedavg")(), clients, np.zeros(dim, np.float32))
    metrics = sim.run_round(1)
    return sim.weights, [f.node for f in metrics.failures]


@given(st.integers(1, 200), st.floats(0, 1), st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_byzantine_choice_is_seeded_and_sized(n: int, fraction: float, seed: int) -> None:
    chosen = choose_byzantine(n, fraction, seed)
    assert chosen == choose_byzantine(n, fraction, seed)
    assert len(chosen) == int(np.floor(fraction * n + 0.5)) and len(set(chosen)) == len(chosen)
    assert all(0 <= i < n for i in chosen)


def test_update_attacks_transform_the_honest_update() -> None:
    honest = Fixed("c", [1.0, -2.0])
    ins = FitIns(1, np.zeros(2, np.float32))
    flip = attacker("sign_flip", honest).fit(ins)
    np.testing.assert_array_equal(flip.update, [-1.0, 2.0])
    boost = attacker("scaling", honest).fit(ins)  # gamma = n / eta = 5
    np.testing.assert_array_equal(boost.update, [5.0, -10.0])
    noise = attacker("gaussian", honest, std=2.0)
    a, b = noise.fit(ins).update, noise.fit(FitIns(2, ins.weights)).update
    assert a.dtype == np.float32 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, noise.fit(ins).update)  # seeded per (round, node)


@pytest.mark.parametrize("mode", ["nan", "inf", "short", "float64"])
def test_malformed_updates_are_rejected_before_aggregation(mode: str) -> None:
    """RELIABILITY 17: rejected before aggregation, listed with a reason, model finite."""
    bad = attacker("malformed", Fixed("bad", [100.0, 100.0]), mode=mode)
    sim = Simulation(
        STRATEGIES.get("fedavg")(),
        [Fixed("a", [1.0, 1.0]), Fixed("b", [3.0, 3.0]), bad],
        np.zeros(2, np.float32),
    )
    metrics = sim.run_round(1)
    assert [f.node for f in metrics.failures] == ["bad"]
    assert metrics.failures[0].reason.startswith("rejected: ")
    np.testing.assert_array_equal(sim.weights, [2.0, 2.0])


def test_scaled_update_is_bounded_by_norm_bounding() -> None:
    """RELIABILITY 18: with bound C, one boosted client moves the model by <= C * its share."""
    honest = [Fixed(f"h{i}", [0.0, 0.0]) for i in range(4)]
    boosted = attacker("scaling", Fixed("x", [3.0, 4.0]))  # norm 5 * 5 = 25
    rule = make_aggregator("norm_bounding", bound=1.0)
    sim = Simulation(
        STRATEGIES.get("fedavg")(aggregator=rule), [*honest, boosted], np.zeros(2, np.float32)
    )
    sim.run_round(1)
    assert np.linalg.norm(sim.weights) <= 1.0 * (1 / 5) + 1e-6


def test_inflated_count_claims_more_examples() -> None:
    res = attacker("inflate", Fixed("x", [1.0], n=3), factor=10).fit(
        FitIns(1, np.zeros(1, np.float32))
    )
    assert res.num_examples == 30


def test_alie_z_max_follows_the_paper() -> None:
    # n = 50, f = 24: s = floor(26) - 24 = 2, z = Phi^-1(48 / 50) = 1.7507
    assert alie_z_max(50, 24) == pytest.approx(1.7507, abs=1e-4)
    # n = 100, f = 20: s = 51 - 20 = 31, z = Phi^-1(0.69) = 0.4959
    assert alie_z_max(100, 20) == pytest.approx(0.4959, abs=1e-4)
    with pytest.raises(ConfigError):
        alie_z_max(10, 10)


def test_omniscient_attackers_see_honest_updates_through_the_runtime() -> None:
    honest = [Fixed("a", [1.0, 0.0]), Fixed("b", [3.0, 2.0]), Fixed("c", [2.0, 4.0])]
    rows = np.array([h.update for h in honest])
    alie = attacker("alie", Fixed("x", [9.0, 9.0]))
    delta, failed = _simulate([*honest, alie])
    crafted = alie_update(rows, alie_z_max(4, 1))
    assert not failed
    np.testing.assert_allclose(delta, (rows.sum(0) + crafted) / 4, rtol=1e-6)
    ipm = attacker("ipm", Fixed("x", [9.0, 9.0]), epsilon=0.5)
    delta, _ = _simulate([*honest, ipm])
    np.testing.assert_allclose(delta, (rows.sum(0) + ipm_update(rows, 0.5)) / 4, rtol=1e-6)
    np.testing.assert_allclose(ipm_update(rows, 0.5), [-1.0, -1.0])


def test_label_flip_poisons_only_training_labels() -> None:
    cfg = config_from_dict(
        {
            "partition": {"kind": "iid", "num_clients": 4},
            "attack": {"kind": "label_flip", "fraction": 0.5},
        }
    )
    sim = build_experiment(cfg).simulation
    flipped = [
        c for c in sim.clients.values() if isinstance(getattr(c, "data", None), PoisonedData)
    ]
    assert len(flipped) == 2
    c = flipped[0]
    _, y = c.data.client_train(c.cid)  # type: ignore[attr-defined]
    _, y_true = c.data.data.client_train(c.cid)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(y.numpy(), 9 - y_true.numpy())


def test_label_flip_keeps_dp_sgd_on_the_attackers_flipped_data() -> None:
    from murmura.privacy.dp_client import DPSGDClient

    cfg = config_from_dict(
        {
            "partition": {"kind": "iid", "num_clients": 4},
            "attack": {"kind": "label_flip", "fraction": 0.5},
            "privacy": {"dp_sgd": True, "dp_sgd_noise_multiplier": 1.0},
        }
    )
    clients = list(build_experiment(cfg).simulation.clients.values())
    assert all(isinstance(c, DPSGDClient) for c in clients)  # nobody trains without DP-SGD
    flipped = [c for c in clients if isinstance(c.inner.data, PoisonedData)]  # type: ignore[attr-defined]
    assert len(flipped) == 2


def test_builder_wraps_the_seeded_fraction_and_config_checks_args() -> None:
    cfg = config_from_dict(
        {"partition": {"num_clients": 10}, "attack": {"kind": "sign_flip", "fraction": 0.3}}
    )
    clients = build_experiment(cfg).simulation.clients
    wrapped = [n for n, c in clients.items() if "SignFlip" in repr(c)]
    assert wrapped == [f"client-{i}" for i in choose_byzantine(10, 0.3, 0)]
    with pytest.raises(ConfigError, match="unexpected keyword"):
        config_from_dict({"attack": {"kind": "ipm", "args": {"eps": 1.0}}})
    _, ids = wrap_byzantine([Fixed(f"n{i}", [0.0]) for i in range(4)], "ipm", 0.5, {}, CTX)
    assert len(ids) == 2
