"""Site policies: each rule refuses a real job that breaks it, with the key, and only then."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.config import Config
from murmura.errors import ConfigError
from murmura.federation.budget import SiteBudget
from murmura.federation.policy import SitePolicy, check_job, model_params

Job = Callable[..., Config]
Eps = Callable[[list[tuple[float, float, int]], float], float]

DP = {"mode": "local", "noise_multiplier": 2.0}


def policy(**rules: Any) -> SitePolicy:
    return SitePolicy.from_table(rules, "sites/plant-a.toml")


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ({"max_round": 3}, "[policy] max_round: unknown key; allowed keys: allowed_tasks"),
        ({"max_rounds": "3"}, "[policy] max_rounds: Input should be a valid integer"),
        ({"max_rounds": 0}, "[policy] max_rounds: Input should be greater than or equal to 1"),
        ({"allowed_tasks": "tabular"}, "[policy] allowed_tasks: Input should be a valid list"),
        ({"delta": 1.5}, "[policy] delta: Input should be less than 1"),
        ({"accountant": "moments"}, "[policy] accountant: Input should be 'rdp' or 'pld'"),
        ({"require_dp": "yes"}, "[policy] require_dp: Input should be a valid boolean"),
    ],
)
def test_a_bad_policy_table_is_refused_naming_the_site_file_and_key(
    table: dict[str, Any], says: str
) -> None:
    with pytest.raises(ConfigError) as err:
        SitePolicy.from_table(table, "sites/plant-a.toml")
    assert str(err.value).startswith("sites/plant-a.toml: ")
    assert says in str(err.value)


def test_an_empty_policy_accepts_any_job(job: Job) -> None:
    assert policy() == SitePolicy()
    assert check_job(policy(), job(), "alice", None) is None


def test_allowed_submitters_refuse_others_but_not_the_sites_own_operator(job: Job) -> None:
    rule = policy(allowed_submitters=["alice", "bob"])
    assert check_job(rule, job(), "alice", None) is None
    assert check_job(rule, job(), "mallory", None) == (
        "policy.allowed_submitters: 'mallory' is not one of ['alice', 'bob']"
    )
    assert check_job(rule, job(), None, None) is None  # murmura client --site --config


def test_allowed_tasks_refuse_another_task_without_importing_it(job: Job) -> None:
    rule = policy(allowed_tasks=["tabular"])
    assert check_job(rule, job(), "alice", None) is None
    assert check_job(rule, job(task={"name": "digits", "args": {}}), "a", None) == (
        "policy.allowed_tasks: task 'digits' is not one of ['tabular']"
    )
    evil = job(task={"name": "site_policy_never_imported:make", "args": {}})
    reason = check_job(policy(allowed_tasks=["tabular"], max_model_params=10), evil, "a", None)
    assert reason is not None and reason.startswith("policy.allowed_tasks:")
    assert "site_policy_never_imported" not in sys.modules


def test_allowed_models_name_the_tasks_model_or_its_default(job: Job) -> None:
    rule = policy(allowed_models=["linear"])
    assert check_job(rule, job(), "a", None) is None
    mlp = job(task={"name": "tabular", "args": {"schema": job().task.args["schema"]}})
    assert check_job(rule, mlp, "a", None) == (
        "policy.allowed_models: model 'mlp' is not one of ['linear']"  # the task's default
    )
    digits = job(task={"name": "digits", "args": {}})
    assert check_job(policy(allowed_models=["digits"]), digits, "a", None) is None


def test_max_model_params_counts_the_jobs_model_built_without_data(job: Job) -> None:
    digits = job(task={"name": "digits", "args": {"hidden": 16}})
    n = 64 * 16 + 16 + 16 * 10 + 10
    assert model_params(digits) == n
    assert check_job(policy(max_model_params=n), digits, "a", None) is None
    assert check_job(policy(max_model_params=n - 1), digits, "a", None) == (
        f"policy.max_model_params = {n - 1}: the job's model has {n} parameters"
    )
    broken = job(task={"name": "site_policy_not_installed:make", "args": {}})
    reason = check_job(policy(max_model_params=n), broken, "a", None)
    assert (
        reason is not None and "policy.max_model_params: the job's model cannot be built" in reason
    )


def test_max_rounds_and_local_epochs(job: Job) -> None:
    assert check_job(policy(max_rounds=5), job(), "a", None) is None
    assert check_job(policy(max_rounds=4), job(), "a", None) == (
        "policy.max_rounds = 4: the job asks for 5 rounds"
    )
    three = job(client={"epochs": 3})
    assert check_job(policy(max_local_epochs=3), three, "a", None) is None
    assert check_job(policy(max_local_epochs=2), three, "a", None) == (
        "policy.max_local_epochs = 2: the job asks for 3"
    )


def test_required_secure_aggregation(job: Job) -> None:
    rule = policy(require_secure_aggregation=True)
    assert check_job(rule, job(), "a", None) == (
        "policy.require_secure_aggregation: the job has secagg.enabled = false"
    )
    secure = job(secagg={"enabled": True, "max_weight": 1000.0})
    assert check_job(rule, secure, "a", None) is None


def test_required_dp_refuses_a_job_that_releases_anything_without_noise(job: Job) -> None:
    rule = policy(require_dp=True)
    assert check_job(rule, job(privacy=DP), "a", None) is None
    assert check_job(rule, job(privacy={"dp_sgd": True}), "a", None) is None  # example-level
    assert check_job(rule, job(), "a", None) == (
        "policy.require_dp: the site requires differential privacy, but its training has no "
        "differential privacy (privacy.mode = 'none', dp_sgd = false)"
    )
    silent = job(privacy={"dp_sgd": True, "dp_sgd_noise_multiplier": 0.0})
    assert check_job(rule, silent, "a", None) == (
        "policy.require_dp: the site requires differential privacy, but its DP-SGD adds no "
        "noise (privacy.dp_sgd_noise_multiplier = 0)"
    )
    exact = job(privacy=DP, stats={"enabled": True, "minmax": False})  # the stats are exact
    assert check_job(rule, exact, "a", None) == (
        "policy.require_dp: the site requires differential privacy, but its statistics phase "
        "releases this site's exact sums ([stats] enabled, stats.noise_multiplier = 0)"
    )
    noised = job(privacy=DP, stats={"enabled": True, "minmax": False, "noise_multiplier": 4.0})
    assert check_job(rule, noised, "a", None) is None
    # an epsilon limit requires DP too: a job without it spends without bound
    reason = check_job(policy(max_epsilon=100.0), job(), "a", None)
    assert reason is not None and reason.startswith("policy.max_epsilon: the site requires")


def test_min_noise_multiplier_uses_the_noise_planned_for_a_target(job: Job) -> None:
    assert check_job(policy(min_noise_multiplier=2.0), job(privacy=DP), "a", None) is None
    low = job(privacy={"mode": "local", "noise_multiplier": 1.5})
    assert check_job(policy(min_noise_multiplier=2.0), low, "a", None) == (
        "policy.min_noise_multiplier = 2: the job's privacy.noise_multiplier is 1.5"
    )
    stats = {"enabled": True, "minmax": False, "noise_multiplier": 1.0}  # every release
    assert check_job(policy(min_noise_multiplier=2.0), job(privacy=DP, stats=stats), "a", None) == (
        "policy.min_noise_multiplier = 2: the job's stats.noise_multiplier is 1"
    )
    planned = job(privacy={"mode": "local", "target_epsilon": 50.0})  # no z: planned (< 2)
    reason = check_job(policy(min_noise_multiplier=2.0), planned, "a", None)
    assert reason is not None and reason.startswith("policy.min_noise_multiplier = 2")


def test_max_epsilon_is_computed_with_the_accountant_not_read_from_the_job(
    job: Job, reference_epsilon: Eps
) -> None:
    eps = reference_epsilon([(2.0, 1.0, 5)], 1e-5)
    assert check_job(policy(max_epsilon=eps * 1.001), job(privacy=DP), "a", None) is None
    reason = check_job(policy(max_epsilon=eps * 0.999), job(privacy=DP), "a", None)
    assert reason is not None and f"the job spends epsilon {eps:.4g} at delta 1e-05" in reason
    # a job's own target_epsilon is a claim: the site computes the same from its noise
    claims = job(privacy={**DP, "target_epsilon": 1000.0})
    assert check_job(policy(max_epsilon=eps * 0.999), claims, "a", None) == reason
    # at the site's delta, not the job's
    strict = check_job(policy(max_epsilon=eps * 1.001, delta=1e-8), job(privacy=DP), "a", None)
    assert strict is not None and "at delta 1e-08" in strict


def test_lifetime_epsilon_composes_the_ledger_with_the_job(
    tmp_path: Path, job: Job, reference_epsilon: Eps
) -> None:
    book = SiteBudget.open(tmp_path / "ledger.db")
    one = reference_epsilon([(2.0, 1.0, 5)], 1e-5)
    two = reference_epsilon([(2.0, 1.0, 10)], 1e-5)
    rule = policy(lifetime_epsilon=(one + two) / 2)
    assert check_job(rule, job(privacy=DP), "a", book) is None
    book.charge("job-1", job(privacy=DP))
    reason = check_job(rule, job(privacy=DP), "a", book)
    assert reason == (
        f"policy.lifetime_epsilon = {(one + two) / 2:g}: this site has spent epsilon "
        f"{one:.4g} and the job would take it to {two:.4g} (delta 1e-05; "
        "privacy.noise_multiplier 2, q 1, 5 steps)"
    )
    with pytest.raises(ValueError, match="budget"):
        check_job(rule, job(privacy=DP), "a", None)


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.integers(1, 60),
    epochs=st.integers(1, 6),
    max_rounds=st.integers(1, 60),
    max_epochs=st.integers(1, 6),
)
def test_shape_limits_refuse_exactly_when_exceeded(
    rounds: int, epochs: int, max_rounds: int, max_epochs: int, job: Job
) -> None:
    cfg = job(run={"rounds": rounds}, client={"epochs": epochs})
    reason = check_job(policy(max_rounds=max_rounds, max_local_epochs=max_epochs), cfg, "a", None)
    assert (reason is not None) == (rounds > max_rounds or epochs > max_epochs)


@settings(max_examples=25, deadline=None)
@given(
    z=st.floats(0.6, 8.0),
    rounds=st.integers(1, 40),
    limit=st.floats(0.05, 60.0),
)
def test_max_epsilon_refuses_exactly_when_the_accountant_says_it_is_exceeded(
    z: float, rounds: int, limit: float, job: Job, reference_epsilon: Eps
) -> None:
    cfg = job(run={"rounds": rounds}, privacy={"mode": "local", "noise_multiplier": z})
    reason = check_job(policy(max_epsilon=limit), cfg, "a", None)
    assert (reason is not None) == (reference_epsilon([(z, 1.0, rounds)], 1e-5) > limit)
