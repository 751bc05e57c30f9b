"""A statistics round over a FederatedDataset's clients: plain, under SecAgg+, with DP; the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from murmura.analytics.federation import StatsPlan
from murmura.analytics.query import StatsQuery
from murmura.analytics.simulate import simulate_statistics
from murmura.analytics.standardise import standardisation
from murmura.cli import app
from murmura.data.federated import ArrayFederatedDataset
from murmura.errors import ConfigError
from murmura.privacy.accountant import create_accountant


def _data(seed: int = 0) -> tuple[ArrayFederatedDataset, np.ndarray, np.ndarray]:
    """Four skewed sites of 3 features (one constant), 3 classes, sizes 5..40."""
    rng = np.random.default_rng(seed)
    n = 100
    x = np.stack([rng.normal(3.0, 2.0, n), rng.uniform(-1, 1, n), np.full(n, 7.0)], axis=1)
    y = rng.integers(0, 3, n)
    order = np.argsort(y, kind="stable")  # label skew: sites get contiguous label runs
    parts = np.split(order, [5, 30, 60])
    data = ArrayFederatedDataset(x.astype(np.float32), y, parts, x[:10].astype(np.float32), y[:10])
    return data, x.astype(np.float32).astype(np.float64), y


QUERY = StatsQuery((-10.0,), (10.0,), bins=4, classes=3)


def test_plain_round_equals_the_pooled_data_and_keeps_each_sites_labels() -> None:
    data, x, y = _data()
    stats = simulate_statistics(data, StatsPlan(QUERY))
    assert stats.count == 100 and stats.sites == 4
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats.variance, x.var(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(stats.labels, np.bincount(y, minlength=3))
    assert stats.site_labels is not None
    for cid, part in enumerate(data._parts):
        want = np.bincount(y[part.numpy()], minlength=3)
        np.testing.assert_array_equal(stats.site_labels[f"client-{cid}"], want)
    mean, scale = standardisation(stats)
    np.testing.assert_allclose(scale, [x[:, 0].std(), x[:, 1].std(), 1.0], rtol=1e-9)
    z = (x - mean) / scale
    np.testing.assert_allclose(z[:, :2].mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(z[:, :2].std(axis=0), 1.0, rtol=1e-9)


def test_secure_round_hides_sites_and_matches_clipped_pooled_sums() -> None:
    data, x, y = _data()
    q = replace(QUERY, minmax=False, clip=True, low=(-2.0,), high=(8.0,))
    stats = simulate_statistics(data, StatsPlan(q, secure=True, max_rows=40))
    clipped = np.clip(x, -2.0, 8.0)
    assert stats.site_labels is None and stats.secure and stats.minimum is None
    assert abs(stats.count - 100) < 1e-3  # quantised, not rounded
    np.testing.assert_allclose(stats.mean, clipped.mean(axis=0), atol=1e-4)
    np.testing.assert_allclose(stats.variance, clipped.var(axis=0), atol=1e-3)
    np.testing.assert_allclose(stats.labels, np.bincount(y, minlength=3), atol=1e-3)
    with pytest.raises(ValueError, match="more than \\[stats\\] max_rows = 20"):
        simulate_statistics(data, StatsPlan(q, secure=True, max_rows=20))


def test_dp_round_is_noised_accounted_and_reproducible() -> None:
    data, x, _ = _data()
    q = replace(QUERY, minmax=False, clip=True)
    plan = StatsPlan(q, noise_multiplier=2.0, delta=1e-5, seed=3)
    first, again = simulate_statistics(data, plan), simulate_statistics(data, plan)
    acc = create_accountant("rdp")
    acc.step(2.0, 1.0)
    assert first.epsilon == pytest.approx(acc.get_epsilon(1e-5)) and first.delta == 1e-5
    np.testing.assert_array_equal(first.mean, again.mean)
    assert first.count != 100 and first.site_labels is None
    np.testing.assert_allclose(first.mean, x.mean(axis=0), atol=1.5)
    other = simulate_statistics(data, replace(plan, seed=4))
    assert not np.array_equal(other.mean, first.mean)
    with pytest.raises(ConfigError, match="no min/max"):
        StatsPlan(QUERY, noise_multiplier=1.0)


def test_stats_command_prints_and_writes_stats_json(tmp_path: Path) -> None:
    cfg = tmp_path / "job.toml"
    cfg.write_text(
        '[run]\nname = "job"\n[partition]\nkind = "iid"\nnum_clients = 3\n'
        "[stats]\nlow = -3.0\nhigh = 3.0\nbins = 6\n"
    )
    result = CliRunner().invoke(app, ["stats", str(cfg), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "federated statistics" in result.output and "from 3 sites" in result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    body = json.loads((run_dir / "stats.json").read_text())
    assert body["sites"] == 3 and len(body["features"]) == 64 and len(body["labels"]) == 10
    assert sum(body["labels"]) == body["count"] == sum(body["features"][5]["hist"])
    assert (run_dir / "label_share.png").stat().st_size > 1000
    per_site = json.loads((run_dir / "label_histograms.json").read_text())
    assert sorted(per_site) == ["client-0", "client-1", "client-2"]
    bad = CliRunner().invoke(app, ["stats", str(cfg), "--set", "stats.secure_aggregation=true"])
    assert bad.exit_code == 2 and "stats.minmax = true cannot be honoured" in bad.output
