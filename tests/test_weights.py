from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate.buffer import UpdateBuffer
from murmura.aggregate.weights import cap_weight_share
from murmura.config import config_from_dict
from murmura.errors import ConfigError
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


def test_a_simulated_edge_caps_its_children_and_reports_their_capped_total() -> None:
    from murmura.sim.hierarchical import EdgeAggregator

    children = [Claims("liar", 1.0, 2**31 - 1), Claims("a", -1.0, 10), Claims("b", -1.0, 10)]
    capped = EdgeAggregator("edge-1", children, FedAvg(), max_weight_share=0.4)
    res = capped.fit(FitIns(1, np.zeros(3, np.float32)))
    np.testing.assert_allclose(res.update, 0.4 * 1.0 + 0.6 * -1.0, atol=1e-6)
    assert res.num_examples == 33  # 20 / 0.6 = 33.3: the liar weighs 13.3, not 2^31 - 1
    plain = EdgeAggregator("edge-1", children, FedAvg()).fit(FitIns(1, np.zeros(3, np.float32)))
    assert plain.update[0] > 0.99999 and plain.num_examples == 2**31 - 1 + 20


def test_max_weight_share_reaches_every_level_of_a_simulated_tree() -> None:
    cfg = config_from_dict(
        {
            "strategy": {"max_weight_share": 0.4},
            "partition": {"num_clients": 4},
            "topology": {"kind": "tree", "edges": 2},
        }
    )
    sim = build_experiment(cfg).simulation
    assert isinstance(sim, Simulation) and sim.max_weight_share == 0.4
    assert [e.max_weight_share for e in sim.clients.values()] == [0.4, 0.4]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("tables", "why"),
    [
        ({"topology": {"kind": "ring"}}, "peer-to-peer: peers mix"),
        ({"secagg": {"enabled": True}}, "secagg.enabled = true"),
        (
            {
                "topology": {"kind": "tree"},
                "privacy": {"mode": "central", "noise_multiplier": 1.0},
            },
            "privacy.mode = 'central' in a tree",
        ),
    ],
)
def test_max_weight_share_is_refused_where_no_aggregator_sees_the_counts(
    tables: dict[str, dict[str, object]], why: str
) -> None:
    data = {"strategy": {"max_weight_share": 0.4}, "partition": {"num_clients": 6}, **tables}
    with pytest.raises(ConfigError, match=f"key 'strategy.max_weight_share': .*{why}"):
        config_from_dict(data)
    del data["strategy"]
    config_from_dict(data)  # accepted without the cap


def test_deployed_coordinator_and_edge_get_the_cap_from_the_config(tmp_path: Path) -> None:
    from murmura.node.deploy import ServerSection, build_coordinator
    from murmura.node.topology_deploy import build_edge

    cfg = config_from_dict({"strategy": {"max_weight_share": 0.4}, "partition": {"num_clients": 3}})
    section = ServerSection(state_dir=str(tmp_path / "server"))
    coordinator = build_coordinator(cfg, section, insecure=True)
    coordinator.state.close()
    coordinator.ledger.close()
    assert coordinator.settings.max_weight_share == 0.4
    path = tmp_path / "edge.toml"
    path.write_text(
        "[strategy]\nmax_weight_share = 0.4\n[partition]\nnum_clients = 3\n"
        f'[edge]\nname = "edge-1"\nparent = "127.0.0.1:1"\nstate_dir = "{tmp_path / "edges"}"\n'
    )
    edge = build_edge(path, insecure=True)
    edge.coordinator.state.close()
    edge.coordinator.ledger.close()
    assert edge.coordinator.settings.max_weight_share == 0.4


def test_a_coordinator_refuses_the_cap_under_secure_aggregation(tmp_path: Path) -> None:
    from murmura.node.coordinator import Coordinator, CoordinatorSettings
    from murmura.strategy.secure import SecAggParams, SecureAggregation
    from murmura.transport.grpc_server import ServerOptions
    from murmura.types import Layout

    settings = CoordinatorSettings(state_dir=tmp_path, max_weight_share=0.4)
    strategy = SecureAggregation(FedAvg(), SecAggParams())
    with pytest.raises(ConfigError, match="max_weight_share cannot be honoured under secure"):
        Coordinator(strategy, np.zeros(2, np.float32), Layout(("w",), ((2,),)), settings,
                    ServerOptions(insecure=True))  # fmt: skip
    assert not (tmp_path / "state.sqlite").exists()
