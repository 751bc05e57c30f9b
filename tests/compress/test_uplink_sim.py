"""[compression] in the simulation: bytes in every round's metrics, composition at load time."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from murmura.compress import framed_size, make_codec
from murmura.compress.uplink import CompressedLearner
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.privacy.local import LocalDPClient
from murmura.sim.builder import build_experiment


def small(**tables: dict[str, Any]) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run": {"seed": 3, "rounds": 2},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 6},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "strategy": {"fraction": 0.5, "min_clients": 2},
    }
    return {**base, **tables}


def test_star_metrics_carry_bytes_up_and_down_per_node_and_total() -> None:
    ratio = 0.05
    exp = build_experiment(
        config_from_dict(small(compression={"uplink": "topk", "args": {"ratio": ratio}}))
    )
    d = exp.model.layout.size
    history = exp.simulation.run(2)
    up = framed_size(make_codec("topk", ratio=ratio), d)
    for m in history.rounds:
        line = m.to_json()
        assert m.participants == 3
        assert (line["bytes_up_mean"], line["bytes_up_max"]) == (up, up)
        assert line["bytes_up_total"] == 3 * up
        assert (line["bytes_down_mean"], line["bytes_down_total"]) == (4 * d, 12 * d)
    assert 4 * d / up > 9  # 5 % of the values at 8 bytes each, plus the header
    plain = build_experiment(config_from_dict(small())).simulation.run(1).rounds[0].to_json()
    assert plain["bytes_up_mean"] == plain["bytes_down_mean"] == 4 * d


def test_error_feedback_residual_is_carried_between_rounds() -> None:
    cfg = config_from_dict(small(compression={"uplink": "sign"}, strategy={"fraction": 1.0}))
    exp = build_experiment(cfg)
    exp.simulation.run(1)
    learner = exp.simulation.clients["client-0"]
    assert isinstance(learner, CompressedLearner)
    ef = learner.uplink.feedback
    assert ef is not None and np.abs(ef.residual).sum() > 0
    first = ef.residual.copy()
    exp.simulation.run(2, start=2)
    assert not np.array_equal(first, learner.uplink.feedback.residual)  # type: ignore[union-attr]


def test_same_config_and_seed_give_the_same_model() -> None:
    cfg = config_from_dict(small(compression={"uplink": "qsgd", "args": {"levels": 2}}))
    a = build_experiment(cfg).simulation.run(2).weights
    b = build_experiment(cfg).simulation.run(2).weights
    np.testing.assert_array_equal(a, b)


def test_local_dp_noise_is_added_before_encoding() -> None:
    """The sent update is k-sparse: the codec saw the noised update, not the other way round."""
    cfg = config_from_dict(
        small(
            privacy={"mode": "local", "noise_multiplier": 1.0},
            compression={"uplink": "topk", "args": {"ratio": 0.1}},
        )
    )
    exp = build_experiment(cfg)
    learner = exp.simulation.clients["client-0"]
    assert isinstance(learner, CompressedLearner) and isinstance(learner.inner, LocalDPClient)
    from murmura.types import FitIns

    res = learner.fit(FitIns(1, exp.model.get(), {}))
    d = exp.model.layout.size
    assert np.count_nonzero(res.update) == int(np.ceil(0.1 * d))


def test_central_dp_noise_is_added_after_decoding() -> None:
    """Every update is k-sparse, yet the new model moves on every coordinate: server noise."""
    cfg = config_from_dict(
        small(
            privacy={"mode": "central", "noise_multiplier": 1.0, "clip_norm": 0.5},
            compression={"uplink": "topk", "args": {"ratio": 0.01}},
            strategy={"fraction": 0.5, "min_clients": 1},
        )
    )
    exp = build_experiment(cfg)
    before = exp.simulation.weights.copy()
    history = exp.simulation.run(1)
    moved = np.count_nonzero(history.weights != before)
    k = int(np.ceil(0.01 * before.size))
    assert moved > 10 * k * max(history.rounds[0].participants, 1)


def test_tree_leaves_send_through_the_codec() -> None:
    cfg = config_from_dict(
        small(topology={"kind": "tree", "edges": 2}, compression={"uplink": "float16"})
    )
    exp = build_experiment(cfg)
    history = exp.simulation.run(1)
    edges = list(exp.simulation.clients.values())
    leaves = [c for e in edges for c in e.children.values()]  # type: ignore[attr-defined]
    assert leaves and all(isinstance(c, CompressedLearner) for c in leaves)
    assert "bytes_up_total" in history.rounds[0].to_json()


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"secagg": {"enabled": True}}, "top-k indices differ, cannot be summed under masks"),
        ({"topology": {"kind": "ring"}}, "CHOCO-gossip"),
    ],
)
def test_compositions_that_cannot_work_are_refused_with_the_reason(
    tables: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(small(compression={"uplink": "topk"}, **tables))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"uplink": "zip"}, "unknown codec 'zip'"),
        ({"uplink": "topk", "args": {"ratio": 0}}, "ratio must be in"),
        ({"uplink": "sign", "shared_mask": True}, "shared_mask = true needs uplink = 'randk'"),
        ({"args": {"ratio": 0.1}}, "need an uplink"),
    ],
)
def test_bad_compression_tables_are_one_line_errors(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(small(compression=table))


def test_downlink_sends_deltas_against_the_model_each_client_holds() -> None:
    """Round 1: float32 (nothing held yet); then the codec's bytes, and the held model
    follows the global one, the dropped part resent the next time (error feedback)."""
    cfg = config_from_dict(
        small(
            compression={"downlink": "topk", "downlink_args": {"ratio": 0.2}},
            strategy={"fraction": 1.0},
        )
    )
    exp = build_experiment(cfg)
    d = exp.model.layout.size
    down = framed_size(make_codec("topk", ratio=0.2), d)
    models = [exp.simulation.weights.copy()]
    history = exp.simulation.run(3, on_round=lambda _m, w: models.append(w.copy()))
    rounds = [m.to_json() for m in history.rounds]
    assert [m["bytes_down_max"] for m in rounds] == [4 * d, down, down]
    assert [m["bytes_up_mean"] for m in rounds] == [4 * d] * 3
    learner = exp.simulation.clients["client-0"]
    from murmura.compress.downlink import DownlinkLearner

    assert isinstance(learner, DownlinkLearner) and learner.downlink.held is not None
    # round 3 trained from the global model of round 2, less what top-k left out: an error
    # smaller than the model's whole movement, since the dropped part is resent
    error = np.linalg.norm(learner.downlink.held - models[2])
    assert 0 < error < 0.5 * np.linalg.norm(models[2] - models[0])


def test_downlink_is_refused_in_p2p() -> None:
    with pytest.raises(ConfigError, match="P2P has no downlink"):
        config_from_dict(small(topology={"kind": "ring"}, compression={"downlink": "float16"}))
