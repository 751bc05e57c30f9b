"""``[strategy] pre_aggregation`` applies wherever the rule does, or is refused at load time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from murmura.aggregate.preaggregation import make_rule
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.topology_deploy import EdgeSection, edge_strategy
from murmura.peer_learner import AggregatorMixer, make_mixer
from murmura.sim.builder import build_experiment

PRE = {"pre_aggregation": "nnm", "pre_aggregation_args": {"fraction": 0.25}}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def config(strategy: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": {"rounds": 1},
        "partition": {"kind": "dirichlet", "num_clients": 8},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
        "strategy": {"aggregator": "krum", "aggregator_args": {"f": 1}, **strategy},
        **sections,
    }


def test_a_tree_edge_applies_the_pre_aggregation_as_the_star_server_does() -> None:
    # one edge over every client: the root's mean of one edge is that edge's aggregate
    star = build_experiment(config_from_dict(config(PRE)))
    tree = build_experiment(config_from_dict(config(PRE, topology={"kind": "tree", "edges": 1})))
    assert star.simulation.strategy.aggregator.name == "nnm+krum"  # type: ignore[union-attr]
    star_hist = star.simulation.run(1)
    tree_hist = tree.simulation.run(1)
    np.testing.assert_allclose(tree.simulation.weights, star.simulation.weights, atol=1e-6)
    assert star_hist.rounds[-1].test_accuracy == tree_hist.rounds[-1].test_accuracy
    plain = build_experiment(config_from_dict(config({})))
    plain.simulation.run(1)
    assert not np.allclose(plain.simulation.weights, star.simulation.weights, atol=1e-4)


def test_a_deployed_edge_builds_the_same_rule() -> None:
    cfg = config_from_dict(config(PRE, topology={"kind": "tree", "edges": 2}))
    section = EdgeSection(name="edge-a", parent="127.0.0.1:1")
    assert edge_strategy(cfg, section, 4).aggregator.name == "nnm+krum"


def test_a_peer_pre_aggregates_its_neighbourhood_before_its_rule() -> None:
    peer = {**PRE, "aggregator": "weighted_mean", "aggregator_args": {}}  # no server rule
    cfg = config_from_dict(config(peer, topology={"kind": "ring", "robust": "coordinate_median"}))
    mixer = build_experiment(cfg).simulation.options.mixer  # type: ignore[union-attr]
    assert mixer == AggregatorMixer("coordinate_median", {}, "nnm", {"fraction": 0.25})
    own = np.zeros(3, np.float32)
    received = {1: np.ones(3, np.float32), 2: np.full(3, 4.0, np.float32)}
    weights = {0: 0.4, 1: 0.3, 2: 0.3}
    rows = np.stack([own, received[1], received[2]])
    want = make_rule("coordinate_median", {}, "nnm", {"fraction": 0.25})(
        rows, np.array([0.4, 0.3, 0.3], np.float32)
    )
    np.testing.assert_allclose(mixer(0, own, received, weights), want)
    assert not np.allclose(want, 1.0)  # the plain median would be 1


def test_plain_gossip_with_a_pre_aggregation_mixes_the_pre_aggregated_rows() -> None:
    mixer = make_mixer("none", pre="nnm", pre_params={"fraction": 0.0})
    own = np.zeros(2, np.float32)
    out = mixer(0, own, {1: np.full(2, 3.0, np.float32)}, {0: 0.5, 1: 0.5})
    np.testing.assert_allclose(out, 1.5)


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"secagg": {"enabled": True, "clip": 10.0}}, "secagg.enabled = true"),
        ({"privacy": {"mode": "central", "noise_multiplier": 1.0}}, "privacy.mode = 'central'"),
        ({"topology": {"kind": "ring", "robust": "clipped"}}, "topology.robust = 'clipped'"),
    ],
)
def test_roles_that_cannot_pre_aggregate_refuse_the_config(
    sections: dict[str, Any], match: str
) -> None:
    strategy = {"aggregator": "weighted_mean", "aggregator_args": {}, **PRE}
    with pytest.raises(ConfigError, match=f"strategy.pre_aggregation.*{match}"):
        config_from_dict(config(strategy, **sections))


@pytest.mark.parametrize(
    ("strategy", "match"),
    [
        ({"pre_aggregation": "mixing"}, "unknown pre-aggregation 'mixing'; valid: arc"),
        ({"pre_aggregation": "nnm", "pre_aggregation_args": {"f": 2}}, "unexpected keyword"),
        ({"pre_aggregation_args": {"fraction": 0.2}}, "without a pre_aggregation"),
        ({"pre_aggregation": "bucketing", "aggregator_args": {"f": 2}}, "n = 4 clients"),
    ],
)
def test_bad_pre_aggregation_settings_name_the_key(strategy: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=f"key 'strategy.pre_aggregation'.*{match}"):
        config_from_dict(config(strategy))
