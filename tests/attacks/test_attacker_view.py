"""What a simulated omniscient attacker is shown in a real round: nodes, and the rule's weights."""

from __future__ import annotations

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.attacks.base import RoundView
from murmura.attacks.clients import ForgeCache, OmniscientAttacker
from murmura.engine.server_round import collect, plan_round
from murmura.strategy import FedAvg
from murmura.types import EvaluateRes, FitIns, FitRes, Vector
from murmura.validation import default_checks

D = 3


class Fixed:
    """A learner whose update is a fixed vector, on ``examples`` examples."""

    def __init__(self, node_id: str, delta: list[float], examples: int) -> None:
        self.node_id, self.delta, self.examples = node_id, delta, examples

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.asarray(self.delta, dtype=np.float32), self.examples)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(loss=0.0, num_examples=self.examples)


class Recorder:
    """An omniscient attack that sends the first honest update and keeps what it was shown."""

    def __init__(self) -> None:
        self.views: list[RoundView] = []

    def forge(self, view: RoundView) -> Vector:
        self.views.append(view)
        first: Vector = view.honest[0]
        return first


def test_an_attacker_sees_the_honest_nodes_and_the_weights_the_rule_will_use() -> None:
    attack, cache = Recorder(), ForgeCache()
    learners = [
        OmniscientAttacker(Fixed("m", [9, 9, 9], 4), attack, cache),  # type: ignore[arg-type]
        OmniscientAttacker(Fixed("n", [9, 9, 9], 6), attack, cache),  # type: ignore[arg-type]
        Fixed("a", [1, 0, 0], 30),
        Fixed("b", [0, 1, 0], 20),
    ]
    members = {c.node_id: c for c in learners}
    w = np.zeros(D, dtype=np.float32)
    plan = plan_round(FedAvg(seed=1), 1, members, list(members), w)  # type: ignore[arg-type]
    outcomes = [(c.node_id, c.fit(plan.ins)) for c in plan.cohort]
    buffer = UpdateBuffer(len(plan.cohort), D)
    assert collect(1, plan.cohort, outcomes, buffer, default_checks(D)) == []
    (view,) = attack.views  # forged once for both attackers
    assert view.nodes == ("a", "b") and view.num_byzantine == 2
    np.testing.assert_array_equal(view.weights, [30, 20, 4, 6])  # honest, then the claims
    np.testing.assert_array_equal(buffer.weights(), [30, 20, 4, 6])  # what the rule gets
    np.testing.assert_array_equal(buffer.rows()[2:], [[1, 0, 0], [1, 0, 0]])  # both forged
