import json

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from murmura.errors import ConfigError, RegistryError
from murmura.privacy.accountant import (
    accountant_from_state,
    create_accountant,
    plan_noise_multiplier,
)


def _reference(kind: str, q: float, z: float, steps: int, delta: float) -> float:
    backend = rdp.RdpAccountant() if kind == "rdp" else pld.PLDAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    backend.compose(event, steps)
    return float(backend.get_epsilon(delta))


@pytest.mark.parametrize(
    ("kind", "q", "z", "steps", "delta"),
    [
        ("rdp", 0.1, 1.0, 100, 1e-5),
        ("rdp", 0.01, 1.1, 1000, 1e-5),
        ("rdp", 0.05, 0.8, 500, 1e-6),
        ("rdp", 1.0, 5.0, 20, 1e-5),
        ("pld", 0.05, 2.0, 100, 1e-5),
        ("pld", 0.02, 1.3, 300, 1e-6),
    ],
)
def test_epsilon_equals_dp_accountings_own(
    kind: str, q: float, z: float, steps: int, delta: float
) -> None:
    accountant = create_accountant(kind)
    accountant.step(z, q, steps)
    assert accountant.get_epsilon(delta) == pytest.approx(
        _reference(kind, q, z, steps, delta), rel=1e-9
    )


def test_one_step_at_a_time_equals_all_at_once() -> None:
    a, b = create_accountant("rdp"), create_accountant("rdp")
    for _ in range(50):
        a.step(1.2, 0.05)
    b.step(1.2, 0.05, steps=50)
    assert a.history == b.history == [(1.2, 0.05, 50)]
    assert a.get_epsilon(1e-5) == b.get_epsilon(1e-5)


def test_mixed_history_equals_composition_of_both() -> None:
    a = create_accountant("rdp")
    a.step(1.0, 0.1, 30)
    a.step(2.0, 0.2, 20)
    ref = rdp.RdpAccountant()
    ref.compose(dp_accounting.PoissonSampledDpEvent(0.1, dp_accounting.GaussianDpEvent(1.0)), 30)
    ref.compose(dp_accounting.PoissonSampledDpEvent(0.2, dp_accounting.GaussianDpEvent(2.0)), 20)
    assert a.get_epsilon(1e-5) == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    assert a.steps == 50


def test_fixed_size_uses_replace_one_with_sensitivity_2c() -> None:
    accountant = create_accountant("rdp_fixed_size", population=1000)
    accountant.step(2.0, 0.1, 40)
    ref = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(
        1000, 100, dp_accounting.GaussianDpEvent(1.0)
    )
    ref.compose(event, 40)
    assert accountant.get_epsilon(1e-5) == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    with pytest.raises(ValueError, match="whole number"):
        accountant.step(1.0, 0.1234)


def test_epsilon_after_looks_ahead_without_changing_state() -> None:
    accountant = create_accountant("rdp")
    assert accountant.get_epsilon(1e-5) == 0.0
    accountant.step(1.0, 0.1, 10)
    before = accountant.get_epsilon(1e-5)
    ahead = accountant.epsilon_after(1e-5, 1.0, 0.1)
    assert accountant.get_epsilon(1e-5) == before and accountant.steps == 10
    accountant.step(1.0, 0.1)
    assert accountant.get_epsilon(1e-5) == pytest.approx(ahead, rel=1e-12)
    assert ahead > before


@pytest.mark.parametrize(
    ("kind", "params"), [("rdp", {}), ("pld", {}), ("rdp_fixed_size", {"population": 500})]
)
def test_state_round_trips_through_json(kind: str, params: dict[str, int]) -> None:
    accountant = create_accountant(kind, **params)
    accountant.step(1.0, 0.1, 5)
    accountant.step(1.5, 0.2, 3)
    state = json.loads(json.dumps(accountant.state_dict()))
    restored = accountant_from_state(state)
    assert type(restored) is type(accountant)
    assert restored.history == accountant.history
    if kind != "pld":  # same kind and history build the same dp-accounting object; PLD is slow
        assert restored.get_epsilon(1e-5) == accountant.get_epsilon(1e-5)


def test_state_of_another_kind_or_population_is_refused() -> None:
    rdp_acc = create_accountant("rdp")
    rdp_acc.step(1.0, 0.1)
    with pytest.raises(ConfigError, match="'rdp' accountant state"):
        create_accountant("pld").load_state_dict(rdp_acc.state_dict())
    fixed = create_accountant("rdp_fixed_size", population=100)
    with pytest.raises(ConfigError, match="population"):
        create_accountant("rdp_fixed_size", population=200).load_state_dict(fixed.state_dict())


def test_unknown_accountant_lists_the_valid_names() -> None:
    with pytest.raises(RegistryError, match="pld, rdp, rdp_fixed_size"):
        create_accountant("moments")


def test_bad_steps_are_refused() -> None:
    accountant = create_accountant("rdp")
    for z, q, n in [(-1.0, 0.1, 1), (1.0, 0.0, 1), (1.0, 1.5, 1), (1.0, 0.1, 0)]:
        with pytest.raises(ValueError):
            accountant.step(z, q, n)
    with pytest.raises(ValueError, match="delta"):
        accountant.get_epsilon(0.0)


@pytest.mark.parametrize(
    ("eps", "delta", "rounds", "q", "kind"),
    [
        (8.0, 1e-5, 100, 0.1, "rdp"),
        (1.0, 1e-5, 1000, 0.01, "rdp"),
        (3.0, 1e-6, 50, 0.2, "rdp"),
        (0.5, 1e-5, 10, 1.0, "rdp"),
        (1.0, 1e-5, 100, 0.05, "pld"),  # settings where PLD is cheap: ~5 evaluations
    ],
)
def test_plan_reaches_its_target_within_one_percent(
    eps: float, delta: float, rounds: int, q: float, kind: str
) -> None:
    plan = plan_noise_multiplier(eps, delta, rounds, q, kind)
    reached = _reference(kind, q, plan.noise_multiplier, rounds, delta)
    assert reached == pytest.approx(plan.epsilon, rel=1e-9)
    assert 0.99 * eps <= reached <= eps


def test_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="out of reach"):
        plan_noise_multiplier(1e-4, 1e-12, 10_000, 1.0)
