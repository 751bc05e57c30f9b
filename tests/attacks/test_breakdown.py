"""``[attack] fraction`` beyond the aggregator's breakdown point is warned about at load time."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from murmura.attacks.breakdown import breakdown_warning, tolerance
from murmura.config import config_from_dict


def _cfg(aggregator: str, fraction: float, clients: int = 10, **extra: Any) -> Any:
    args = extra.pop("aggregator_args", {})
    strategy = {"aggregator": aggregator, "aggregator_args": args, **extra.pop("strategy", {})}
    return config_from_dict(
        {
            "partition": {"num_clients": clients},
            "strategy": strategy,
            "attack": {"kind": "sign_flip", "fraction": fraction},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("rule", "params", "n", "tolerated"),
    [
        ("weighted_mean", {}, 10, 0),
        ("coordinate_median", {}, 10, 4),
        ("coordinate_median", {}, 11, 5),
        ("geometric_median", {}, 7, 3),
        ("trimmed_mean", {"beta": 0.2}, 10, 2),
        ("trimmed_mean", {"beta": 0.29}, 100, 29),
        ("krum", {"f": 2}, 10, 2),
        ("multi_krum", {"f": 3, "m": None}, 10, 3),
        ("bulyan", {"f": 1}, 7, 1),
    ],
)
def test_tolerated_attackers_per_rule(
    rule: str, params: dict[str, Any], n: int, tolerated: int
) -> None:
    tol = tolerance(rule, params, n)
    assert tol is not None and tol.attackers == tolerated


def test_clipping_rules_have_no_breakdown_count() -> None:
    assert tolerance("centered_clipping", {"tau": 1.0}, 10) is None
    assert tolerance("norm_bounding", {"bound": 1.0}, 10) is None


@pytest.mark.parametrize(
    ("aggregator", "args", "within", "beyond", "limit"),
    [
        ("krum", {"f": 2}, 0.2, 0.3, "f = 2 of a round of n = 10 (it needs n >= 2f + 3)"),
        ("bulyan", {"f": 1}, 0.1, 0.2, "f = 1 of a round of n = 10 (it needs n >= 4f + 3)"),
        ("trimmed_mean", {"beta": 0.2}, 0.2, 0.3, "floor(beta n) = 2 of a round of n = 10"),
        ("coordinate_median", {}, 0.4, 0.5, "fewer than half of the round"),
        ("geometric_median", {}, 0.4, 0.5, "fewer than half of the round"),
    ],
)
def test_a_fraction_beyond_the_rule_is_named_within_it_is_not(
    aggregator: str, args: dict[str, Any], within: float, beyond: float, limit: str
) -> None:
    assert breakdown_warning(_cfg(aggregator, within, aggregator_args=args)) is None
    why = breakdown_warning(_cfg(aggregator, beyond, aggregator_args=args))
    assert why is not None
    assert f"attack.fraction = {beyond}" in why and f"strategy.aggregator = {aggregator!r}" in why
    assert limit in why


def test_the_mean_breaks_with_one_attacker_and_no_attack_is_silent() -> None:
    why = breakdown_warning(_cfg("weighted_mean", 0.1))
    assert why is not None and "breakdown point is 0" in why
    assert breakdown_warning(_cfg("weighted_mean", 0.0)) is None
    quiet = config_from_dict({"attack": {"fraction": 0.9}, "partition": {"num_clients": 10}})
    assert breakdown_warning(quiet) is None  # kind = "none"


def test_sampled_rounds_and_tree_edges_count_per_aggregator() -> None:
    # 30 clients, 6 attackers; rounds of 10 hold 2 on average: Krum with f = 2 holds
    sampled = {"strategy": {"fraction": 1 / 3}}
    assert breakdown_warning(_cfg("krum", 0.2, 30, aggregator_args={"f": 2}, **sampled)) is None
    # a tree of 3 edges: each edge combines its 10 children, 2 attackers on average
    tree = {"topology": {"kind": "tree", "edges": 3}}
    assert breakdown_warning(_cfg("krum", 0.2, 30, aggregator_args={"f": 2}, **tree)) is None
    why = breakdown_warning(_cfg("krum", 0.3, 30, aggregator_args={"f": 2}, **tree))
    assert why is not None and "round of 10" in why


def test_the_warning_is_logged_at_load_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="murmura.config.loading"):
        _cfg("krum", 0.4, aggregator_args={"f": 1})
    [record] = [r for r in caplog.records if "Byzantine" in r.getMessage()]
    assert "strategy.aggregator = 'krum'" in record.getMessage()
    assert record.levelno == logging.WARNING
