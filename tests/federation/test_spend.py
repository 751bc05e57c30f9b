"""A job's epsilon, computed by the site from its config, equals what ``murmura run`` reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import config_from_dict
from murmura.federation.spend import composed_epsilon, job_spend
from murmura.privacy.wiring import resolve_noise_multiplier

Eps = Callable[[list[tuple[float, float, int]], float], float]


def _digits(privacy: dict[str, Any], rounds: int = 3, fraction: float = 1.0) -> dict[str, Any]:
    return {
        "run": {"rounds": rounds, "seed": 2},
        "task": {"name": "digits", "args": {"hidden": 8}},
        "partition": {"kind": "iid", "num_clients": 4},
        "client": {"epochs": 1, "batch_size": 64, "lr": 0.1},
        "strategy": {"fraction": fraction},
        "evaluation": {"every": 0},
        "privacy": privacy,
    }


@pytest.mark.parametrize(
    ("privacy", "rounds", "fraction", "trained"),
    [
        ({"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.1}, 3, 0.25, 3),
        ({"mode": "local", "noise_multiplier": 3.0}, 2, 1.0, 2),
        ({"mode": "local", "target_epsilon": 8.0}, 3, 1.0, 3),  # z planned for the target
        ({"mode": "local", "noise_multiplier": 3.0, "target_epsilon": 3.0}, 6, 1.0, 4),
    ],
    ids=["central", "local", "planned", "stops-early"],
)
def test_the_jobs_epsilon_is_what_murmura_run_reports(
    privacy: dict[str, Any], rounds: int, fraction: float, trained: int, tmp_path: Path
) -> None:
    data = _digits(privacy, rounds, fraction)
    path = tmp_path / "job.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    cfg = config_from_dict(data)
    spend = job_spend(cfg)
    assert spend is not None
    assert (spend.steps, len(lines)) == (trained, trained)
    assert spend.noise_multiplier == resolve_noise_multiplier(cfg)
    assert spend.epsilon(cfg.privacy.delta) == summary["epsilon"]  # bit for bit


def test_a_job_without_client_level_dp_spends_nothing_accountable() -> None:
    assert job_spend(config_from_dict(_digits({}))) is None
    assert job_spend(config_from_dict(_digits({"dp_sgd": True}))) is None


# q = 1 (local DP) is fast to account; q = 0.5 makes dp-accounting's series converge slowly
MECHANISM = st.tuples(st.floats(0.5, 6.0), st.sampled_from([1.0, 0.1]), st.integers(1, 100))


@settings(max_examples=10, deadline=None)
@given(history=st.lists(MECHANISM, max_size=3), more=MECHANISM)
def test_composition_is_monotone_and_is_dp_accountings(
    history: list[tuple[float, float, int]],
    more: tuple[float, float, int],
    reference_epsilon: Eps,
) -> None:
    before = composed_epsilon([history], 1e-5, "rdp")
    after = composed_epsilon([history, [more]], 1e-5, "rdp")
    assert after >= before
    assert after == pytest.approx(reference_epsilon([*history, more], 1e-5), rel=1e-9)
