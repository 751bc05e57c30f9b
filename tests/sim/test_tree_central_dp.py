"""Central DP-FedAvg in the hierarchical topology: trusted edges sum, the root noises once."""

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.sim.hierarchical import EdgeAggregator, build_edges
from murmura.sim.runtime import History, Simulation
from murmura.strategy.dp import DifferentiallyPrivate, EdgeSum

ROUNDS = 3
CENTRAL = {"mode": "central", "noise_multiplier": 0.8, "clip_norm": 0.5}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(privacy: dict[str, Any], kind: str, fraction: float = 0.5) -> dict[str, Any]:
    """Digits over 12 Dirichlet clients, one local epoch, 3 rounds; a tree has 4 edges."""
    topology: dict[str, Any] = {"kind": kind, "edges": 4} if kind == "tree" else {"kind": kind}
    return {
        "run": {"rounds": ROUNDS, "seed": 7},
        "task": {"name": "digits"},
        "partition": {"kind": "dirichlet", "num_clients": 12, "alpha": 0.5},
        "client": {"batch_size": 32, "lr": 0.1},
        "strategy": {"fraction": fraction},
        "evaluation": {"every": 0},
        "topology": topology,
        "privacy": privacy,
    }


def _sim(privacy: dict[str, Any], kind: str, fraction: float = 0.5) -> Simulation:
    sim = build_experiment(config_from_dict(_config(privacy, kind, fraction))).simulation
    assert isinstance(sim, Simulation)
    return sim


def _three_levels(privacy: dict[str, Any]) -> Simulation:
    """The tree's root and 4 edges, with 2 regional edges (also ``EdgeSum``) between."""
    two = _sim(privacy, "tree")
    edges = list(two.clients.values())
    assert all(isinstance(e, EdgeAggregator) for e in edges)
    rule = edges[0].strategy  # type: ignore[union-attr]
    assert isinstance(rule, EdgeSum)
    regions = build_edges([edges[:2], edges[2:]], lambda e, n: rule)
    return Simulation(two.strategy, regions, two.weights)


def _assert_same_run(tree: History, flat: History) -> None:
    np.testing.assert_allclose(tree.weights, flat.weights, rtol=0, atol=1e-6)
    assert len(tree.rounds) == len(flat.rounds)
    for t, f in zip(tree.rounds, flat.rounds, strict=True):
        assert t.extra["epsilon"] == f.extra["epsilon"]
        assert t.extra["dp_clip_norm"] == pytest.approx(f.extra["dp_clip_norm"], rel=1e-9)
        assert t.extra["dp_clipped_fraction"] == f.extra["dp_clipped_fraction"]
        assert t.train_loss == pytest.approx(f.train_loss, rel=1e-6)


@pytest.mark.parametrize(
    "extra",
    [{}, {"weight_cap": 60.0, "adaptive_clipping": True, "clip_count_stddev": 1.0}],
    ids=["unit-weights", "weight-cap-adaptive"],
)
def test_tree_central_dp_equals_the_star_run_with_the_same_seed(extra: dict[str, Any]) -> None:
    privacy = {**CENTRAL, **extra}
    flat_sim = _sim(privacy, "star")
    w0 = flat_sim.weights.copy()
    flat = flat_sim.run(ROUNDS)
    tree = _sim(privacy, "tree").run(ROUNDS)
    _assert_same_run(tree, flat)
    assert np.abs(flat.weights - w0).max() > 1e-3  # the run did move the model
    assert any(0 < m.extra["dp_clipped_fraction"] < 1 for m in flat.rounds)
    if extra:  # the clip norm moved, the same way in both
        assert len({m.extra["dp_clip_norm"] for m in tree.rounds}) == ROUNDS


def test_three_level_tree_central_dp_equals_the_star_run() -> None:
    flat = _sim(CENTRAL, "star").run(ROUNDS)
    deep = _three_levels(CENTRAL).run(ROUNDS)
    _assert_same_run(deep, flat)


def test_tree_edges_sample_the_star_cohort_and_the_root_adds_the_noise() -> None:
    star, tree = _sim(CENTRAL, "star"), _sim(CENTRAL, "tree")
    root = tree.strategy
    assert isinstance(root, DifferentiallyPrivate) and root.from_edges
    edges = [e for e in tree.clients.values() if isinstance(e, EdgeAggregator)]
    for r in range(1, ROUNDS + 1):
        tree.run_round(r)
        sampled = [n for e in edges for n in e.last_sampled]
        assert sampled == star.strategy.sample(r, list(star.clients))
    assert root.mechanism.noise_std == pytest.approx(0.8 * 0.5)


def test_tree_central_dp_without_noise_and_clip_is_hierarchical_fedavg() -> None:
    # q = 1 and weights n / cap (cap above every client): the DP estimate is FedAvg's mean
    privacy = {"mode": "central", "noise_multiplier": 0.0, "clip_norm": 1e9, "weight_cap": 1e6}
    private = _sim(privacy, "tree", fraction=1.0).run(ROUNDS)
    plain = _sim({}, "tree", fraction=1.0).run(ROUNDS)
    np.testing.assert_allclose(private.weights, plain.weights, rtol=0, atol=1e-6)


def test_tree_central_dp_stops_before_the_target_like_the_star() -> None:
    privacy = {**CENTRAL, "noise_multiplier": 1.5, "target_epsilon": 4.0}
    sims = {kind: _sim(privacy, kind) for kind in ("star", "tree")}
    budget = sims["tree"].strategy.budget  # type: ignore[attr-defined]
    allowed = 0
    while not budget.would_exceed():  # how many rounds fit under the target
        budget.spend()
        allowed += 1
    assert 1 <= allowed < 20
    tree = _sim(privacy, "tree").run(20)
    star = sims["star"].run(allowed + 1)
    assert len(tree.rounds) == len(star.rounds) == allowed
    assert tree.rounds[-1].extra["epsilon"] == star.rounds[-1].extra["epsilon"] <= 4.0
    assert tree.rounds[-1].test_accuracy is not None  # the last round run is evaluated


def test_tree_central_dp_with_per_edge_secure_aggregation_is_refused() -> None:
    data = _config(CENTRAL, "tree")
    data["secagg"] = {"enabled": True}
    with pytest.raises(ConfigError, match=r"privacy\.mode: .*secagg\.enabled = false"):
        config_from_dict(data)
