"""FedAvgM, FedAdagrad, FedAdam and FedYogi against a hand-computed two-round example."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from murmura.aggregate.buffer import UpdateBuffer
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.strategy import STRATEGIES, FedAvg, FedOpt

# Two rounds from x0 = (0, 0) with aggregated deltas d1 = (1, -2), d2 = (0.5, 0.5);
# lr 0.1, beta1 0.9, beta2 0.99, tau 1e-3, m_{-1} = 0, v_{-1} = tau^2 = 1e-6.
#   m1 = 0.1 * d1 = (0.1, -0.2);  m2 = 0.9 * m1 + 0.1 * d2 = (0.14, -0.13)
#   adagrad: v1 = 1e-6 + d1^2 = (1.000001, 4.000001);  v2 = v1 + 0.25
#            x1 = 0.1 * m1 / (sqrt(v1) + 1e-3) = (0.00999, -0.009995)
#   adam:    v1 = 0.99e-6 + 0.01 d1^2 = (0.01000099, 0.04000099); v2 = 0.99 v1 + 0.0025
#            x1 = 0.1 * 0.1 / (0.1000050 + 0.001) = 0.099005, ...
#   yogi:    v1 = 1e-6 + 0.01 d1^2 (v0 < d1^2);  v2 = v1 + 0.0025 (v1 < d2^2)
D1, D2 = np.array([1.0, -2.0], np.float32), np.array([0.5, 0.5], np.float32)
EXPECTED = {
    "fedadagrad": [(0.00999, -0.009995), (0.0225008, -0.0162979)],
    "fedadam": [(0.099005, -0.0995013), (0.2236049, -0.1625514)],
    "fedyogi": [(0.099005, -0.0995012), (0.2231098, -0.1622554)],
    # FedAvgM, lr 1, momentum 0.9: x1 = d1; m2 = 0.9 d1 + d2 = (1.4, -1.3); x2 = (2.4, -3.3)
    "fedavgm": [(1.0, -2.0), (2.4, -3.3)],
}


def _strategy(name: str) -> FedOpt:
    lr = 1.0 if name == "fedavgm" else 0.1
    s = STRATEGIES.get(name)(server_lr=lr, server_momentum=0.9, beta1=0.9, beta2=0.99, tau=1e-3)
    assert isinstance(s, FedOpt)
    return s


def _buffer(delta: np.ndarray) -> UpdateBuffer:
    """Two clients whose examples-weighted mean is ``delta``."""
    buf = UpdateBuffer(2, 2, keep_rows=False)
    buf.add("a", delta - 1, 10, {})
    buf.add("b", delta + 1, 10, {})
    return buf


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_two_rounds_match_hand_computation(name: str) -> None:
    s = _strategy(name)
    x = np.zeros(2, np.float32)
    for round_, (delta, want) in enumerate(zip((D1, D2), EXPECTED[name], strict=True), 1):
        new = s.aggregate(round_, x, _buffer(delta), [])
        assert new is not None and new.dtype == np.float32
        np.testing.assert_allclose(new, want, rtol=1e-5, atol=1e-6)
        x = new


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_state_round_trip_resumes_identically(name: str) -> None:
    a, b = _strategy(name), _strategy(name)
    x1 = a.server_update(np.zeros(2, np.float32), D1)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.server_update(x1, D2), b.server_update(x1, D2))


def test_state_of_another_kind_is_refused() -> None:
    adam, yogi = _strategy("fedadam"), _strategy("fedyogi")
    adam.server_update(np.zeros(2, np.float32), D1)
    with pytest.raises(ConfigError, match="kind 'adam'"):
        yogi.load_state_dict(adam.state_dict())


def test_fedavgm_without_momentum_is_fedavg() -> None:
    m = STRATEGIES.get("fedavgm")(server_lr=0.5, server_momentum=0.0)
    plain = STRATEGIES.get("fedavg")(server_lr=0.5, server_momentum=0.9, beta1=0.1)
    assert type(plain) is FedAvg
    x = np.ones(2, np.float32)
    for delta in (D1, D2):
        np.testing.assert_allclose(m.server_update(x, delta), plain.server_update(x, delta))
        x = plain.server_update(x, delta)


def test_config_defaults_follow_the_paper() -> None:
    s = config_from_dict({"strategy": {"name": "fedadam"}}).strategy
    assert (s.server_lr, s.beta1, s.beta2, s.tau) == (1e-2, 0.9, 0.99, 1e-3)
    assert config_from_dict({}).strategy.server_lr == 1.0
    with pytest.raises(ConfigError, match="beta2"):
        config_from_dict({"strategy": {"name": "fedyogi", "beta2": 1.0}})


@given(
    arrays(np.float32, (2, 4, 3), elements=st.floats(-1, 1, width=32)),
    st.sampled_from(sorted(EXPECTED)),
    st.permutations(range(4)),
)
@settings(max_examples=30, deadline=None)
def test_two_rounds_do_not_depend_on_client_order(
    rows: np.ndarray, name: str, order: list[int]
) -> None:
    def run(perm: list[int]) -> np.ndarray:
        s, x = _strategy(name), np.zeros(3, np.float32)
        for round_ in (1, 2):
            buf = UpdateBuffer(4, 3, keep_rows=True)
            for i in perm:
                buf.add(f"c{i}", rows[round_ - 1, i], 5 + i, {})
            new = s.aggregate(round_, x, buf, [])
            assert new is not None
            x = new
        return x

    np.testing.assert_allclose(run(list(range(4))), run(order), rtol=1e-5, atol=1e-6)
