"""One server round over learners: the cohort and its instructions, then validated outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from murmura.aggregate.buffer import UpdateBuffer
from murmura.engine.server_round import (
    HonestView,
    admit,
    collect,
    plan_cohort,
    plan_round,
)
from murmura.errors import UpdateRejected
from murmura.strategy import FedAvg, Strategy
from murmura.strategy.scaffold import Scaffold
from murmura.types import EvaluateRes, FitIns, FitRes, Vector
from murmura.validation import default_checks

D = 3


class Shift:
    """A learner whose update is a fixed vector (or that raises)."""

    def __init__(self, node_id: str, delta: list[float], examples: int = 10) -> None:
        self.node_id, self.delta, self.examples = node_id, delta, examples

    def fit(self, ins: FitIns) -> FitRes:
        if not self.delta:
            raise RuntimeError("out of memory")
        return FitRes(np.asarray(self.delta, dtype=np.float32), self.examples)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(loss=float(np.abs(weights).sum()), num_examples=self.examples)


class Mirror(Shift):
    """An omniscient attacker: sends minus the mean of the honest updates it was shown."""

    views: list[HonestView]

    def craft(self, view: HonestView, own: FitRes) -> FitRes:
        self.views = [*getattr(self, "views", []), view]
        return FitRes(-np.mean(view.updates, axis=0).astype(np.float32), own.num_examples)


def _round(learners: list[Shift], config: dict[str, object] | None = None) -> tuple:
    members = {c.node_id: c for c in learners}
    w = np.zeros(D, dtype=np.float32)
    plan = plan_round(FedAvg(seed=1), 1, members, list(members), w, config)  # type: ignore[arg-type]
    buffer = UpdateBuffer(len(plan.cohort), D)
    outcomes = []
    for c in plan.cohort:
        try:
            outcomes.append((c.node_id, c.fit(plan.ins)))
        except Exception as exc:  # noqa: BLE001 - what an executor yields
            outcomes.append((c.node_id, exc))
    failures = collect(1, plan.cohort, outcomes, buffer, default_checks(D), who="child")
    return plan, buffer, failures


def test_a_round_validates_every_outcome_and_names_each_failure() -> None:
    learners = [
        Shift("a", [1, 2, 3]),
        Shift("b", [3, 2, 1], examples=30),
        Shift("c", []),
        Shift("d", [np.nan, 0, 0]),
    ]
    plan, buffer, failures = _round(learners, {"lr": 0.1})
    assert [c.node_id for c in plan.cohort] == ["a", "b", "c", "d"]
    assert plan.ins.config["lr"] == 0.1
    assert [f.node for f in failures] == ["c", "d"]
    assert failures[0].reason == "child raised RuntimeError: out of memory"
    assert failures[1].reason.startswith("rejected: ")
    assert buffer.nodes == ["a", "b"]
    assert buffer.total_weight() == 40
    new = FedAvg().aggregate(1, np.zeros(D, dtype=np.float32), buffer, failures)
    assert new is not None
    np.testing.assert_allclose(new, [2.5, 2.0, 1.5])  # (1*a + 3*b) / 4


def test_an_omniscient_learner_crafts_from_the_accepted_honest_updates_last() -> None:
    mirror = Mirror("m", [9, 9, 9])
    learners = [mirror, Shift("a", [1, 0, 0]), Shift("b", [0, 1, 0]), Shift("c", [np.inf, 0, 0])]
    _, buffer, failures = _round(learners)
    assert buffer.nodes == ["a", "b", "m"]  # the attacker's update goes in after the honest
    (view,) = mirror.views
    assert view.num_byzantine == 1 and view.num_examples == [10, 10]
    assert list(view.nodes) == ["a", "b"]  # the rejected "c" is not in the view
    assert list(view.byzantine_examples) == [10]  # the count the attacker claims
    np.testing.assert_array_equal(np.stack(view.updates), [[1, 0, 0], [0, 1, 0]])
    assert [f.node for f in failures] == ["c"]
    new = FedAvg().aggregate(1, np.zeros(D, dtype=np.float32), buffer, failures)
    assert new is not None
    np.testing.assert_allclose(new, [1 / 6, 1 / 6, 0], atol=1e-7)


def test_the_coordinators_plan_is_the_simulations_by_node_id() -> None:
    nodes = [f"n{i}" for i in range(10)]
    w = np.arange(D, dtype=np.float32)
    plan = plan_cohort(FedAvg(fraction=0.3, seed=4), 2, nodes, w, {"lr": 0.1})
    members = {n: Shift(n, [0, 0, 0]) for n in nodes}
    sim = plan_round(FedAvg(fraction=0.3, seed=4), 2, members, nodes, w, {"lr": 0.1})  # type: ignore[arg-type]
    assert len(plan.cohort) == 3 and plan.cohort == [c.node_id for c in sim.cohort]
    assert plan.ins.round == 2 and plan.ins.config == sim.ins.config == {"lr": 0.1}
    assert plan.ins.weights is w


def test_the_strategys_config_goes_over_the_given_one() -> None:
    nodes = ["a", "b"]
    w = np.ones(D, dtype=np.float32)
    strategy: Strategy = Scaffold(seed=1)
    own = strategy.configure(1, w)
    (key,) = own
    plan = plan_cohort(strategy, 1, nodes, w, {key: "parent's", "lr": 0.5})
    assert plan.ins.config == {key: own[key], "lr": 0.5}
    assert plan_cohort(strategy, 1, nodes, w).ins.config == own  # no config: the strategy's


def test_admit_keeps_the_given_metrics_and_rejects_with_the_reason() -> None:
    buffer = UpdateBuffer(2, D)
    fit = FitRes(np.array([1, 2, 3], dtype=np.float32), 5, {"train_loss": 0.5})
    admit(1, "a", fit, buffer, default_checks(D), {"train_loss": 0.5, "bytes_up": 12.0})
    assert buffer.nodes == ["a"] and buffer.metrics == [{"train_loss": 0.5, "bytes_up": 12.0}]
    bad = FitRes(np.array([1, np.nan, 3], dtype=np.float32), 5)
    with pytest.raises(UpdateRejected) as err:
        admit(1, "b", bad, buffer, default_checks(D))
    assert "non-finite" in err.value.reason and err.value.node == "b"
    assert buffer.nodes == ["a"] and buffer.total_weight() == 5
