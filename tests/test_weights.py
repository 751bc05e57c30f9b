import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate.buffer import UpdateBuffer
from murmura.aggregate.weights import cap_weight_share
from murmura.config import config_from_dict
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.types import EvaluateRes, FitIns, FitRes, Vector


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.1, 1e6), min_size=1, max_size=30), st.floats(0.01, 1.0))
def test_no_share_exceeds_the_cap_and_small_clients_keep_their_weight(
    w: list[float], share: float
) -> None:
    raw = np.asarray(w)
    out = cap_weight_share(raw, share)
    assert np.all(out <= raw * (1 + 1e-9) + 1e-9) or share * len(w) <= 1
    if share * len(w) > 1:
        assert (out / out.sum()).max() <= share * (1 + 1e-9)
        untouched = out < out.max() * (1 - 1e-9)
        np.testing.assert_allclose(out[untouched], raw[untouched])
    else:
        np.testing.assert_allclose(out, out[0])


def test_inflated_count_is_capped_in_the_aggregate() -> None:
    buf = UpdateBuffer(3, 1, keep_rows=False, max_weight_share=0.5)
    assert buf.keep_rows
    buf.add("liar", np.array([100.0], np.float32), 10**9, {})
    buf.add("a", np.array([0.0], np.float32), 10, {})
    buf.add("b", np.array([0.0], np.float32), 10, {})
    assert buf.weighted_mean()[0] == 50.0  # the liar holds half the weight, not ~100%


class Claims:
    def __init__(self, node_id: str, value: float, count: int) -> None:
        self.node_id, self.value, self.count = node_id, value, count

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.full(ins.weights.size, self.value, np.float32), self.count)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 0)


def test_max_weight_share_from_config_reaches_the_runtime() -> None:
    exp = build_experiment(
        config_from_dict({"strategy": {"max_weight_share": 0.25}, "partition": {"num_clients": 4}})
    )
    assert exp.simulation.max_weight_share == 0.25
    clients = [Claims("liar", 1.0, 10**6)] + [Claims(f"h{i}", 0.0, 10) for i in range(4)]
    sim = Simulation(FedAvg(), clients, np.zeros(3, np.float32), max_weight_share=0.25)
    sim.run_round(1)
    np.testing.assert_allclose(sim.weights, 0.25, rtol=1e-6)  # RELIABILITY 19
