"""The robustness grid command: cells, outputs, resume, and the typer sub-app."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from murmura.ops.bench_cli import bench_app
from murmura.ops.robustness import cell_config, load_cells, markdown_table, rule_args

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
    again = CliRunner().invoke(bench_app, [*args, "--rules", "weighted_mean,krum"])
    assert again.exit_code == 0 and "x weighted_mean" not in again.output  # nothing rerun


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
