import json

import numpy as np
import pytest

from murmura.errors import ConfigError
from murmura.privacy.adaptive_clipping import AdaptiveClipper, delta_noise_multiplier


@pytest.mark.parametrize(("quantile", "start"), [(0.5, 0.5), (0.5, 40.0), (0.8, 1.0)])
def test_clip_norm_moves_to_the_target_quantile(quantile: float, start: float) -> None:
    # norms ~ Uniform(0, 10): the q-quantile is exactly 10 q
    rng = np.random.default_rng(11)
    clipper = AdaptiveClipper(
        start,
        expected_cohort_size=100,
        target_quantile=quantile,
        learning_rate=0.2,
        count_noise_std=2.0,
    )
    history = []
    for _ in range(300):
        norms = rng.uniform(0.0, 10.0, size=100)
        history.append(clipper.update(norms, rng))
    settled = float(np.mean(history[-100:]))
    assert settled == pytest.approx(10 * quantile, rel=0.08)
    assert clipper.rounds == 300


def test_state_round_trips_and_refuses_another_kind() -> None:
    rng = np.random.default_rng(0)
    a = AdaptiveClipper(1.0, expected_cohort_size=10, count_noise_std=1.0)
    a.update(np.arange(10.0), rng)
    state = json.loads(json.dumps(a.state_dict()))
    b = AdaptiveClipper(1.0, expected_cohort_size=10, count_noise_std=1.0)
    b.load_state_dict(state)
    assert b.clip_norm == a.clip_norm and b.rounds == 1
    with pytest.raises(ConfigError, match="kind"):
        b.load_state_dict({"kind": "rdp", "version": 1, "history": []})


def test_delta_noise_multiplier_keeps_the_total_budget() -> None:
    z, sigma_b = 1.0, 5.0
    z_delta = delta_noise_multiplier(z, sigma_b)
    assert z_delta > z
    assert (z_delta**-2 + (2 * sigma_b) ** -2) ** -0.5 == pytest.approx(z)
    with pytest.raises(ConfigError, match="too small"):
        delta_noise_multiplier(1.0, 0.4)
