"""The robustness grid command: cells, outputs, resume, and the typer sub-app."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from murmura.errors import ConfigError
from murmura.ops.bench_cli import bench_app
from murmura.ops.robustness import (
    DEFENCES,
    attack_spec,
    attacker_presence,
    cell_config,
    load_cells,
    markdown_table,
    rule_args,
)

TINY = """
[run]
rounds = 1
[partition]
kind = "iid"
num_clients = 5
[client]
epochs = 1
"""


def test_cell_config_sets_attack_and_rule_parameters() -> None:
    base = {"partition": {"num_clients": 10}}
    cfg = cell_config(base, "alie", "krum", 0.2)
    assert (cfg.attack.kind, cfg.attack.fraction) == ("alie", 0.2)
    assert (cfg.strategy.aggregator, cfg.strategy.aggregator_args) == ("krum", {"f": 2})
    assert cell_config(base, "none", "trimmed_mean", 0.2).attack.fraction == 0.0
    assert rule_args("trimmed_mean", 0.2, 10) == {"beta": 0.2}
    assert rule_args("coordinate_median", 0.2, 10) == {}


def test_grid_writes_outputs_and_resumes(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    out = tmp_path / "rob"
    args = ["robustness", str(config), "--out", str(out), "--attacks", "none,sign_flip"]
    result = CliRunner().invoke(bench_app, [*args, "--rules", "weighted_mean,krum"])
    assert result.exit_code == 0, result.output
    cells = load_cells(out / "robustness.json")
    assert set(cells) == {(a, r) for a in ("none", "sign_flip") for r in ("weighted_mean", "krum")}
    assert all(c.accuracy is not None for c in cells.values())
    assert (out / "robustness.png").stat().st_size > 0
    table = (out / "robustness.md").read_text()
    assert "| sign_flip |" in table and "krum" in table
    assert "Cohort: all 5 clients every round, so 1 attackers in every round." in table
    again = CliRunner().invoke(bench_app, [*args, "--rules", "weighted_mean,krum"])
    assert again.exit_code == 0 and "x weighted_mean" not in again.output  # nothing rerun


def test_the_header_says_how_the_attackers_sit_in_each_round() -> None:
    assert attacker_presence(100, 100, 0.2).endswith("so 20 attackers in every round")
    sampled = attacker_presence(100, 10, 0.2)
    assert sampled.startswith("10 of 100 clients sampled") and sampled.endswith("2.0 on average")


def test_failed_cells_show_as_err() -> None:
    from murmura.ops.robustness import Cell

    cells = {("a", "r"): Cell("a", "r", None, 0.0, error="boom")}
    assert "| a | err |" in markdown_table(cells, ["a"], ["r"])


def test_score_flags_against_the_attackers() -> None:
    from murmura.ops.robustness import score_flags
    from murmura.types import RoundMetrics

    def rnd(r: int, scored: list[str], flagged: list[str]) -> RoundMetrics:
        anomaly = {n: {"cosine": 0.0} for n in scored}
        return RoundMetrics(r, len(scored), extra={"anomaly": anomaly, "flagged": flagged})

    history = [
        rnd(1, ["c0", "c1", "c2"], []),
        rnd(2, ["c0", "c2", "c3"], ["c0", "c2"]),
        rnd(3, ["c1", "c3"], ["c0", "c2", "c3"]),
    ]
    score, rounds = score_flags(["c0", "c3", "c9"], history)  # c9 never took part
    assert score is not None and score.flagged == ("c0", "c2", "c3")
    assert (score.true_positives, score.attackers_seen) == (2, 2)
    assert score.precision == 2 / 3 and score.recall == 1.0
    assert [(r.round, r.attackers) for r in rounds] == [
        (1, ("c0",)),
        (2, ("c0", "c3")),
        (3, ("c3",)),
    ]
    assert score_flags(["c0"], [RoundMetrics(1, 3)]) == (None, ())  # monitor off: no score


def test_grid_records_attackers_and_scores_the_anomaly_flags(tmp_path: Path) -> None:
    from murmura.attacks import choose_byzantine

    config = tmp_path / "tiny.toml"
    config.write_text(TINY + "[anomaly]\nenabled = true\nrounds = 1\n")
    out = tmp_path / "rob"
    args = ["robustness", str(config), "--out", str(out), "--attacks", "sign_flip"]
    res = CliRunner().invoke(bench_app, [*args, "--rules", "weighted_mean", "--fraction", "0.4"])
    assert res.exit_code == 0, res.output
    assert "flags P/R 1.00 / 1.00" in res.output
    cell = load_cells(out / "robustness.json")[("sign_flip", "weighted_mean")]
    expected = tuple(f"client-{i}" for i in choose_byzantine(5, 0.4, 0))
    assert len(expected) == 2 and cell.attackers == expected
    assert cell.flags is not None and cell.flags.flagged == expected
    assert (cell.flags.precision, cell.flags.recall) == (1.0, 1.0)
    assert [(r.round, r.attackers, r.flagged) for r in cell.rounds] == [(1, expected, expected)]
    assert "| sign_flip | 1.00 / 1.00 |" in (out / "robustness.md").read_text()


def test_defences_are_config_overrides_and_missing_ones_are_named() -> None:
    from murmura.ops.robustness import DEFENCES, Defence, available, cell_config

    base = {"partition": {"num_clients": 10}}
    custom = Defence("clip", {"strategy": {"aggregator": "norm_bounding"}})
    assert cell_config(base, "min_max", custom, 0.2).strategy.aggregator == "norm_bounding"
    krum = cell_config(base, "none", DEFENCES["krum"], 0.2)
    assert krum.strategy.aggregator_args == {"f": 2}
    fixed = Defence("tm", {"strategy": {"aggregator": "trimmed_mean", "aggregator_args": {}}})
    assert cell_config(base, "none", fixed, 0.2).strategy.aggregator_args == {}
    bogus = Defence("bogus", {"strategy": {"aggregator": "no_such_rule"}})
    ok, missing = available(base, [DEFENCES["krum"], bogus])
    assert [d.name for d in ok] == ["krum"] and "no_such_rule" in missing["bogus"]


def test_defence_specs_parse_toml_values_and_refuse_bad_ones() -> None:
    import pytest

    from murmura.errors import ConfigError
    from murmura.ops.robustness_defences import chosen_defences, parse_defence

    d = parse_defence('nnm+krum:strategy.pre_aggregation="nnm",strategy.aggregator="krum"')
    assert d.name == "nnm+krum"
    assert d.overrides == {"strategy": {"pre_aggregation": "nnm", "aggregator": "krum"}}
    assert parse_defence("c:strategy.max_weight_share=0.5").overrides["strategy"] == {
        "max_weight_share": 0.5
    }
    for bad in ("nocolon", "x:aggregator=1", "x:strategy.aggregator=krum"):
        with pytest.raises(ConfigError, match="--defence"):
            parse_defence(bad)
    assert chosen_defences(None, None, []) is None
    picked = chosen_defences("krum", "nnm+krum", [])
    assert picked is not None and [getattr(p, "name", p) for p in picked] == ["krum", "nnm+krum"]
    with pytest.raises(ConfigError, match="valid: weighted_mean"):
        chosen_defences(None, "nope", [])


def test_backdoor_cells_show_accuracy_and_attack_success() -> None:
    from murmura.ops.robustness import Cell

    cells = {("dba", "krum"): Cell("dba", "krum", 0.9, 1.0, asr=0.25)}
    assert "| dba | 0.900 / 0.25 |" in markdown_table(cells, ["dba"], ["krum"])


def test_weighted_defences_add_weighted_to_the_grids_own_parameters() -> None:
    base = {"partition": {"num_clients": 10}}
    cfg = cell_config(base, "none", DEFENCES["w:nnm+trimmed_mean"], 0.2)
    assert cfg.strategy.aggregator_args == {"beta": 0.2, "weighted": True}
    assert (cfg.strategy.pre_aggregation, cfg.strategy.pre_aggregation_args) == (
        "nnm",
        {"weighted": True},
    )
    geomed = cell_config(base, "none", DEFENCES["w:nnm+geometric_median"], 0.2)
    assert geomed.strategy.aggregator_args == {}  # always example-weighted


def test_a_grid_row_may_name_one_attack_parameter() -> None:
    base = {"partition": {"num_clients": 10}}
    cfg = cell_config(base, "min_max@deviation=std", "trimmed_mean", 0.2)
    assert (cfg.attack.kind, cfg.attack.args, cfg.attack.fraction) == (
        "min_max",
        {"deviation": "std"},
        0.2,
    )
    assert attack_spec("alie@z=1.5") == ("alie", {"z": 1.5})
    with pytest.raises(ConfigError, match="expected NAME@key=VALUE"):
        attack_spec("min_max@std")


def test_the_example_robust_config_is_the_grid_row_it_quotes() -> None:
    """``examples/digits-robust.toml`` quotes a grid row's figures: it must be that row."""
    from murmura.config import load_config

    root = Path(__file__).resolve().parents[2] / "examples"
    w1 = load_config(root / "digits-fedavg.toml").model_dump()
    row = DEFENCES["nnm+geometric_median+fednova@server_lr=1.5"]
    cell = cell_config(w1, "none", row, 0.2)
    example = load_config(root / "digits-robust.toml")
    assert cell.strategy == example.strategy
    assert (cell.client, cell.partition, cell.run.rounds) == (
        example.client,
        example.partition,
        example.run.rounds,
    )
    assert (cell.strategy.server_lr, cell.strategy.normalize_steps) == (1.5, True)
