"""``[compression] uplink = "quantize"`` with ``[secagg]`` (issue 18): the rules at load time and
a simulated run whose masked inputs take 2 bytes a word instead of 4."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from murmura.compress.uplink import CompressedLearner
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.privacy.secagg.messages import masked_input_size
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation


def _config(compression: dict[str, Any] | None, clients: int = 6, **secagg: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run": {"rounds": 2, "seed": 4},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": clients},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"fraction": 1.0, "min_clients": 2},
        "evaluation": {"every": 0},
        "simulation": {"executor": "sequential"},
        "secagg": {"enabled": True, "clip": 0.05, **secagg},
    }
    if compression is not None:
        base["compression"] = compression
    return base


@pytest.mark.parametrize(
    ("compression", "message"),
    [
        ({"uplink": "topk"}, "top-k indices differ, cannot be summed under masks"),
        ({"uplink": "topkq"}, "top-k indices differ"),
        ({"uplink": "randk"}, "random indices differ"),
        ({"uplink": "randk", "shared_mask": True}, "shared per round would compose but is not"),
        ({"uplink": "sign"}, "scaled signs carry each client's own scale"),
        ({"uplink": "qsgd"}, "QSGD scales each client's levels by its own norm"),
        ({"uplink": "float16"}, "floats do not add up under masks"),
        ({"uplink": "bfloat16"}, "floats do not add up under masks"),
        ({"uplink": "quantize", "args": {"bucket": 64}}, r"\['bucket'\].*per-bucket scale"),
        ({"uplink": "quantize", "args": {"bits": 4}}, "bits = 4 .* fewer bits would save no"),
        ({"uplink": "quantize", "error_feedback": True}, "keeps no per-client residual"),
    ],
)
def test_codecs_that_cannot_be_summed_under_masks_are_refused_with_the_reason(
    compression: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_config(compression))


def test_deterministic_rounding_to_levels_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be stochastic to stay unbiased"):
        config_from_dict(_config({"uplink": "quantize"}, rounding="deterministic"))


def test_too_many_clients_for_the_16_bit_ring_are_refused_naming_the_numbers() -> None:
    config_from_dict(_config({"uplink": "quantize"}, clients=258))
    with pytest.raises(
        ConfigError,
        match="up to 259 clients per round: their summed levels need 17 bits, the 16-bit ring "
        "holds at most 258 clients at 8 bits",
    ):
        config_from_dict(_config({"uplink": "quantize"}, clients=259))


def _run(compression: dict[str, Any] | None) -> tuple[Simulation, list[dict[str, Any]]]:
    sim = build_experiment(config_from_dict(_config(compression))).simulation
    assert isinstance(sim, Simulation)
    history = sim.run(2)
    return sim, [r.to_json() for r in history.rounds]


def test_a_quantised_secure_run_sends_two_bytes_a_word_and_trains() -> None:
    plain_sim, plain = _run(None)
    sim, rounds = _run({"uplink": "quantize", "args": {"bits": 8}})
    # the codec runs inside the protocol: no client encodes its update a second time
    assert not any(isinstance(c, CompressedLearner) for c in sim.clients.values())
    words = sim.weights.size + 1  # the update and its weight
    for p, q in zip(plain, rounds, strict=True):
        assert p["bytes_up_mean"] == masked_input_size(words, 4)
        assert q["bytes_up_mean"] == q["bytes_up_max"] == masked_input_size(words, 2)
        assert q["bytes_up_total"] == 6 * masked_input_size(words, 2)
        assert q["secagg_bytes_per_client"] == p["secagg_bytes_per_client"] - 2 * words
    # unbiased 8-bit levels on the grid clip * max_weight / 127: the model moves like the
    # plain secure run's, not bitwise
    start = build_experiment(config_from_dict(_config(None))).simulation.weights
    moved_plain = plain_sim.weights - start
    moved = sim.weights - start
    assert not np.array_equal(moved, moved_plain)
    cos = moved @ moved_plain / (np.linalg.norm(moved) * np.linalg.norm(moved_plain))
    assert cos > 0.9
    again, _ = _run({"uplink": "quantize"})
    np.testing.assert_array_equal(again.weights, sim.weights)  # same seed, same model


def test_per_edge_secure_aggregation_masks_levels_too() -> None:
    base = _config({"uplink": "quantize"}, clients=12)
    base["topology"] = {"kind": "tree", "edges": 2}
    exp = build_experiment(config_from_dict(base))
    start = exp.simulation.weights.copy()
    exp.simulation.run(1)
    edges = list(exp.simulation.clients.values())
    assert [e.strategy.params.level_bits for e in edges] == [8, 8]  # type: ignore[attr-defined]
    assert not any(
        isinstance(c, CompressedLearner)
        for e in edges
        for c in e.children.values()  # type: ignore[attr-defined]
    )
    plain = build_experiment(config_from_dict({**base, "compression": {}}))
    plain.simulation.run(1)
    moved, moved_plain = exp.simulation.weights - start, plain.simulation.weights - start
    cos = moved @ moved_plain / (np.linalg.norm(moved) * np.linalg.norm(moved_plain))
    assert 0.9 < cos < 1.0


def test_central_dp_adds_its_noise_after_decoding_the_levels() -> None:
    privacy = {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.0}
    data = _config({"uplink": "quantize"}, clip=None)
    sim = build_experiment(config_from_dict({**data, "privacy": privacy})).simulation
    rounds = [r.to_json() for r in sim.run(2).rounds]  # type: ignore[union-attr]
    for r in rounds:
        assert r["dp_clip_norm"] == 0.5 and r["epsilon"] > 0
        assert r["bytes_up_mean"] == masked_input_size(sim.weights.size + 1, 2)
    # Poisson cohorts may hold every client: the ring must hold all of them
    with pytest.raises(ConfigError, match="up to 300 clients per round"):
        config_from_dict({**_config({"uplink": "quantize"}, clients=300), "privacy": privacy,
                          "strategy": {"fraction": 0.1, "min_clients": 2}})  # fmt: skip
