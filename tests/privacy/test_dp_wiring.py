"""DP wired into runs: config, DP-FedAvg strategy, accounting per round, early stop, clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import tomli_w
import torch
from dp_accounting import rdp
from typer.testing import CliRunner

from murmura.aggregate.buffer import UpdateBuffer
from murmura.cli import app
from murmura.client import FlatModel, LocalSGD, TorchClient
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.privacy.accountant import create_accountant
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.dp_client import DPSGDClient, DPSGDParams
from murmura.privacy.local import LocalDPClient
from murmura.privacy.mechanisms import CentralDP
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.strategy.dp import DifferentiallyPrivate, poisson_sample
from murmura.tasks import load_task
from murmura.types import FitIns, FitRes

DELTA = 1e-5


def _config(privacy: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    """A small digits run: 10 iid clients, 1 epoch, 3 rounds, central evaluation."""
    base: dict[str, Any] = {
        "run": {"rounds": 3, "seed": 3},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 10},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"fraction": 1.0},
        "privacy": privacy,
    }
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return base


def _run(data: dict[str, Any]) -> Any:
    cfg = config_from_dict(data)
    exp = build_experiment(cfg)
    assert isinstance(exp.simulation, Simulation)
    return exp.simulation.run(cfg.run.rounds)


def _reference_epsilon(z: float, q: float, rounds: int) -> float:
    """dp-accounting's own epsilon for ``rounds`` Poisson-sampled Gaussian steps."""
    acc = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(DELTA))


def test_epsilon_is_in_metrics_jsonl_each_round_and_in_the_summary(tmp_path: Path) -> None:
    data = _config({"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.1})
    data["strategy"]["fraction"] = 0.5
    path = tmp_path / "dp.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2, 3]
    for m in lines:
        assert m["epsilon"] == pytest.approx(_reference_epsilon(1.1, 0.5, m["round"]), rel=1e-9)
        assert m["delta"] == DELTA
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epsilon"] == lines[-1]["epsilon"]
    assert summary["stopped_early"] is False


def test_target_epsilon_stops_before_the_budget_is_exceeded() -> None:
    z = 2.0
    eps = [_reference_epsilon(z, 1.0, r) for r in (1, 2, 3)]
    target = (eps[1] + eps[2]) / 2  # room for two rounds, not three
    data = _config({"mode": "central", "noise_multiplier": z, "target_epsilon": target})
    data["run"]["rounds"] = 5
    data["evaluation"] = {"every": 0}
    history = _run(data)
    assert [m.round for m in history.rounds] == [1, 2]
    assert history.rounds[-1].extra["epsilon"] == pytest.approx(eps[1])
    assert history.rounds[-1].extra["epsilon"] <= target < eps[2]
    assert history.rounds[-1].test_accuracy is not None  # the last round run is evaluated


def test_a_target_spent_by_one_round_fails_at_load_time_naming_the_key() -> None:
    data = _config({"mode": "central", "noise_multiplier": 0.5, "target_epsilon": 0.01})
    with pytest.raises(ConfigError, match=r"privacy\.target_epsilon"):
        config_from_dict(data)


@pytest.mark.parametrize(
    ("privacy", "strategy", "key"),
    [
        ({"mode": "local", "adaptive_clipping": True, "noise_multiplier": 1.0}, {}, "adaptive"),
        ({"mode": "central"}, {}, "noise_multiplier"),
        (
            {"mode": "central", "noise_multiplier": 1.0},
            {"aggregator": "coordinate_median"},
            "mode",
        ),
        ({"mode": "central", "noise_multiplier": -1.0}, {}, "noise_multiplier"),
        ({"mode": "central", "delta": 1.5, "noise_multiplier": 1.0}, {}, "delta"),
        ({"mode": "local", "noise_multiplier": 1.0, "weight_cap": 10.0}, {}, "weight_cap"),
        (
            {"mode": "central", "noise_multiplier": 3.0, "adaptive_clipping": True},
            {"fraction": 0.5},
            "clip_count_stddev",
        ),
    ],
)
def test_impossible_privacy_settings_fail_before_training(
    privacy: dict[str, Any], strategy: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError, match=rf"privacy\.{key}"):
        config_from_dict(_config(privacy, strategy=strategy))


def test_poisson_sampling_is_seeded_deterministic_and_at_the_rate() -> None:
    nodes = [f"n{i}" for i in range(200)]
    assert poisson_sample(7, 3, nodes, 0.1) == poisson_sample(7, 3, nodes, 0.1)
    assert poisson_sample(7, 3, nodes, 0.1) != poisson_sample(7, 4, nodes, 0.1)
    assert poisson_sample(7, 3, nodes, 0.1) != poisson_sample(8, 3, nodes, 0.1)
    assert poisson_sample(7, 3, nodes, 1.0) == nodes
    sizes = [len(poisson_sample(0, r, nodes, 0.1)) for r in range(300)]
    assert len(set(sizes)) > 5  # the cohort size varies, as Poisson sampling does
    assert np.mean(sizes) == pytest.approx(20, abs=1.0)


def _buffer(rows: np.ndarray) -> UpdateBuffer:
    buf = UpdateBuffer(len(rows), rows.shape[1], keep_rows=True)
    for i, row in enumerate(rows):
        buf.add(f"n{i}", row.astype(np.float32), 10 * (i + 1), {})
    return buf


def _dp(clip: float, z: float, n: int = 4) -> DifferentiallyPrivate:
    budget = PrivacyBudget(
        create_accountant("rdp"), noise_multiplier=z, sample_rate=1.0, delta=DELTA
    )
    return DifferentiallyPrivate(FedAvg(fraction=1.0), CentralDP(clip, z, n), budget, seed=1)


def test_each_row_is_clipped_and_weighted_equally_before_the_server_step() -> None:
    rows = np.array([[3.0, 4.0], [0.3, 0.4], [-6.0, 8.0], [0.0, 0.1]], dtype=np.float32)
    w = np.zeros(2, np.float32)
    new = _dp(clip=1e6, z=0.0).aggregate(1, w, _buffer(rows), [])
    assert new is not None
    np.testing.assert_allclose(new, rows.mean(axis=0), rtol=1e-6)  # uniform, not by examples
    new = _dp(clip=1.0, z=0.0).aggregate(1, w, _buffer(rows), [])
    assert new is not None
    clipped = np.array([[0.6, 0.8], [0.3, 0.4], [-0.6, 0.8], [0.0, 0.1]])
    np.testing.assert_allclose(new, clipped.mean(axis=0), rtol=1e-5)


def test_capped_example_weights_follow_the_weighted_estimator() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]], dtype=np.float32)
    budget = PrivacyBudget(
        create_accountant("rdp"), noise_multiplier=0.0, sample_rate=1.0, delta=DELTA
    )
    # examples 10, 20, 30, 40 with cap 20: weights 0.5, 1, 1, 1; expected total weight 3.5
    dp = DifferentiallyPrivate(
        FedAvg(fraction=1.0), CentralDP(1e6, 0.0, 3.5), budget, weight_cap=20.0
    )
    new = dp.aggregate(1, np.zeros(2, np.float32), _buffer(rows), [])
    assert new is not None
    expected = (0.5 * rows[0] + rows[1] + rows[2] + rows[3]) / 3.5
    np.testing.assert_allclose(new, expected, rtol=1e-6)


def test_an_empty_round_still_releases_noise_and_spends_budget() -> None:
    strategy = _dp(clip=1.0, z=1.0)
    new = strategy.aggregate(1, np.zeros(5, np.float32), _buffer(np.zeros((0, 5))), [])
    assert new is not None and np.all(new != 0)
    assert strategy.budget.accountant.steps == 1


def test_state_dict_restores_epsilon_and_refuses_another_kind() -> None:
    a = _dp(clip=1.0, z=1.0)
    for r in (1, 2):
        a.aggregate(r, np.zeros(3, np.float32), _buffer(np.ones((2, 3))), [])
    b = _dp(clip=1.0, z=1.0)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    restored = float(str(b.round_metrics(3)["epsilon"]))
    assert restored == float(str(a.round_metrics(3)["epsilon"])) > 0
    with pytest.raises(ConfigError):
        b.load_state_dict({"kind": "fedadam"})


def test_clipping_alone_stays_close_to_plain_fedavg() -> None:
    rounds = {"rounds": 10}
    plain = _run(_config({}, run=rounds))
    privacy = {"mode": "central", "clip_norm": 0.3, "noise_multiplier": 0.0}
    clipped = _run(_config(privacy, run=rounds))
    assert clipped.rounds[0].extra["dp_clipped_fraction"] == 1.0  # every update was clipped
    acc_plain, acc_clip = plain.rounds[-1].test_accuracy, clipped.rounds[-1].test_accuracy
    assert acc_plain > 0.8
    assert abs(acc_plain - acc_clip) <= 0.02


def test_a_dp_run_is_deterministic_for_a_fixed_seed() -> None:
    privacy = {"mode": "central", "clip_norm": 0.5, "noise_multiplier": 1.0}
    data = _config(privacy, strategy={"fraction": 0.5}, run={"rounds": 2})
    a, b = _run(data), _run(data)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert [m.participants for m in a.rounds] == [m.participants for m in b.rounds]
    other = _run(_config(privacy, strategy={"fraction": 0.5}, run={"rounds": 2, "seed": 4}))
    assert not np.array_equal(a.weights, other.weights)


class _Fixed:
    node_id = "client-0"

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.full(100, 1.0, np.float32), 50, {"train_loss": 0.5})

    def evaluate(self, weights: Any) -> Any:
        raise NotImplementedError


def test_local_dp_client_clips_and_noises_with_a_per_client_round_stream() -> None:
    def release(cid: int, round_: int) -> FitRes:
        client = LocalDPClient(
            _Fixed(), client_index=cid, clip_norm=1.0, noise_multiplier=0.5, seed=9
        )
        return client.fit(FitIns(round_, np.zeros(100, np.float32)))

    a = release(0, 1)
    np.testing.assert_array_equal(a.update, release(0, 1).update)
    assert not np.array_equal(a.update, release(1, 1).update)
    assert not np.array_equal(a.update, release(0, 2).update)
    noise = a.update - np.full(100, 0.1, np.float32)  # the clipped update is 0.1 per entry
    assert np.std(noise) == pytest.approx(0.5, rel=0.25)
    assert a.num_examples == 1 and not a.metrics  # nothing un-noised leaves the node


def test_dp_sgd_without_noise_or_clipping_matches_full_batch_sgd() -> None:
    task = load_task("digits")
    data = task.federate(40, "iid", {}, seed=0)  # ~36 samples per client, batch 64 > n
    torch.manual_seed(0)
    model = FlatModel(task.build_model())
    w0 = model.get()
    hp = LocalSGD(epochs=3, batch_size=64, lr=0.1, momentum=0.5)
    ins = FitIns(1, w0)
    plain = TorchClient(0, data, task, model, hp, seed=0).fit(ins)
    private = DPSGDClient.of(TorchClient(0, data, task, model, hp, seed=0), DPSGDParams(1e6, 0.0))
    np.testing.assert_allclose(private.fit(ins).update, plain.update, atol=1e-5)
    noisy = DPSGDClient.of(TorchClient(0, data, task, model, hp, seed=0), DPSGDParams(1.0, 1.0))
    first, second = noisy.fit(ins), noisy.fit(ins)
    np.testing.assert_array_equal(first.update, second.update)  # seeded per (seed, round, cid)
    assert not np.allclose(first.update, plain.update, atol=1e-3)


def test_dp_sgd_config_reports_a_sample_level_epsilon() -> None:
    data = _config(
        {"dp_sgd": True, "dp_sgd_clip_norm": 1.0, "dp_sgd_noise_multiplier": 1.5},
        run={"rounds": 1},
        partition={"num_clients": 40},
        client={"batch_size": 64},
    )
    (m,) = _run(data).rounds
    # every client holds fewer than 64 samples: q = 1, one step per epoch, one epoch
    assert m.extra["sample_epsilon"] == pytest.approx(_reference_epsilon(1.5, 1.0, 1))
    assert "epsilon" not in m.extra


def test_local_dp_run_accounts_every_round_as_a_release() -> None:
    data = _config({"mode": "local", "clip_norm": 0.5, "noise_multiplier": 2.0}, run={"rounds": 2})
    data["strategy"]["fraction"] = 0.5  # the server sees who sent: no amplification, q = 1
    history = _run(data)
    for m in history.rounds:
        assert m.extra["epsilon"] == pytest.approx(_reference_epsilon(2.0, 1.0, m.round))
        assert m.train_loss is None  # no un-noised training metric leaves a node
