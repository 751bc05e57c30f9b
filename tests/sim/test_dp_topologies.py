"""Differential privacy in the peer-to-peer and hierarchical topologies."""

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import tomli_w
import torch
from dp_accounting import rdp
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import config_from_dict
from murmura.engine.peer_round import local_step
from murmura.errors import ConfigError
from murmura.peer_learner import PeerLearner
from murmura.privacy.dp_client import dp_sgd_schedule
from murmura.privacy.local import PEER_NOISE, LocalDPClient
from murmura.sim.builder import build_experiment
from murmura.sim.p2p import P2POptions, P2PSimulation
from murmura.topology import build_topology
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

DELTA = 1e-5


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(privacy: dict[str, Any], **topology: Any) -> dict[str, Any]:
    """Digits on a ring of 6 peers (12 iid clients), D-PSGD with 2 local steps, 3 rounds."""
    return {
        "run": {"rounds": 3, "seed": 3},
        "task": {"name": "digits"},
        "partition": {"kind": "iid", "num_clients": 12},
        "client": {"batch_size": 16, "lr": 0.1},
        "evaluation": {"every": 0},
        "topology": {"kind": "ring", "args": {"n": 6}, "local_steps": 2, **topology},
        "privacy": privacy,
    }


def _reference_epsilon(z: float, q: float, steps: int) -> float:
    """dp-accounting's own epsilon for ``steps`` Poisson-sampled Gaussian steps."""
    acc = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, steps))
    return float(acc.get_epsilon(DELTA))


def _p2p(data: dict[str, Any]) -> P2PSimulation:
    sim = build_experiment(config_from_dict(data)).simulation
    assert isinstance(sim, P2PSimulation)
    return sim


class Frozen:
    """A peer whose local training changes nothing: what it shares is only the DP noise."""

    node_id = "frozen"

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.zeros_like(ins.weights, dtype=np.float32), 1, {"train_loss": 0.0})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 0)


def _local_dp(inner: Any, peer: int, clip: float, z: float, seed: int) -> LocalDPClient:
    """A peer's local DP wrapper, as ``private_learners`` builds it for P2P."""
    return LocalDPClient(
        inner,
        client_index=peer,
        clip_norm=clip,
        noise_multiplier=z,
        seed=seed,
        noise_stream=PEER_NOISE,
    )


class Recorder:
    """Plain gossip that records what each peer kept and received."""

    def __init__(self) -> None:
        self.own: dict[int, Vector] = {}
        self.received: dict[int, dict[int, Vector]] = {}

    def __call__(
        self, node: int, own: Vector, received: Mapping[int, Vector], weights: Mapping[int, float]
    ) -> Vector:
        self.own[node], self.received[node] = own.copy(), dict(received)
        return own


def test_p2p_local_dp_without_noise_and_with_a_huge_clip_equals_plain_p2p() -> None:
    plain = _p2p(_config({}))
    private = _p2p(_config({"mode": "local", "noise_multiplier": 0.0, "clip_norm": 1e9}))
    plain.run(3)
    private.run(3)
    np.testing.assert_allclose(private.x, plain.x, rtol=0, atol=1e-6)
    assert not np.array_equal(plain.x[0], plain.x[1])  # peers did train


def test_p2p_peers_share_and_keep_only_models_noised_at_scale_z_c() -> None:
    z, clip, d = 0.7, 2.0, 100_000
    graph = build_topology("ring", n=4)
    learners = [_local_dp(Frozen(), i, clip, z, seed=5) for i in range(4)]
    x0 = np.random.default_rng(0).normal(size=d).astype(np.float32)
    mixer = Recorder()
    sim = P2PSimulation(graph, learners, x0, P2POptions(mixer=mixer))
    sim.run_round(1)
    sent = {j: m for received in mixer.received.values() for j, m in received.items()}
    assert sorted(sent) == [0, 1, 2, 3]
    for j, message in sent.items():
        noise = message.astype(np.float64) - x0
        assert noise.std() == pytest.approx(z * clip, rel=0.02)  # Frozen: the change is 0
        assert abs(noise.mean()) < 0.02
        np.testing.assert_array_equal(mixer.own[j], message)  # what it keeps is what it sends
    assert not np.array_equal(sent[0], sent[1])  # each peer draws its own noise


def test_p2p_local_dp_clips_the_change_before_noising() -> None:
    class Jump(Frozen):
        def fit(self, ins: FitIns) -> FitRes:
            return FitRes(np.full_like(ins.weights, 10.0), 1, {"train_loss": 1.0})

    dp = _local_dp(Jump(), 0, 0.5, 0.0, seed=0)
    w = np.zeros(16, dtype=np.float32)
    out, loss = local_step(dp, w, 1)
    assert np.linalg.norm(out - w) == pytest.approx(0.5, rel=1e-5)
    assert np.isnan(loss)  # a loss computed on private data is not reported


def test_p2p_local_dp_epsilon_equals_dp_accountings_own_every_round() -> None:
    history = _p2p(_config({"mode": "local", "noise_multiplier": 1.5})).run(3)
    for m in history.rounds:
        # every peer releases every round: q = 1, one Gaussian step per round
        assert m.extra["epsilon"] == pytest.approx(_reference_epsilon(1.5, 1.0, m.round), rel=1e-9)
        assert m.extra["delta"] == DELTA
        assert m.train_loss is None


def test_p2p_dp_sgd_reports_the_smallest_peers_sample_epsilon() -> None:
    privacy = {"dp_sgd": True, "dp_sgd_noise_multiplier": 1.2}
    sim = _p2p(_config(privacy))
    history = sim.run(2)
    peers = [learner.inner for learner in sim.learners]  # type: ignore[attr-defined]
    assert all(isinstance(p, PeerLearner) for p in peers)
    smallest = min(p.num_examples for p in peers)
    rate, steps = dp_sgd_schedule(smallest, 16, 1, peers[0].local_steps)
    assert (rate, steps) == (16 / smallest, 2)  # D-PSGD: local_steps Poisson batches
    for m in history.rounds:
        ref = _reference_epsilon(1.2, rate, steps * m.round)
        assert m.extra["sample_epsilon"] == pytest.approx(ref, rel=1e-9)
        assert "epsilon" not in m.extra
        assert m.train_loss is not None


def test_p2p_dp_sgd_changes_what_peers_train() -> None:
    plain = _p2p(_config({}))
    noisy = _p2p(_config({"dp_sgd": True, "dp_sgd_noise_multiplier": 1.0}))
    plain.run(1)
    noisy.run(1)
    assert not np.allclose(plain.x, noisy.x, atol=1e-4)


def test_target_epsilon_stops_the_p2p_run_before_it_is_exceeded() -> None:
    z = 2.0
    eps = [_reference_epsilon(z, 1.0, r) for r in (1, 2, 3)]
    target = (eps[1] + eps[2]) / 2  # room for two rounds, not three
    data = _config({"mode": "local", "noise_multiplier": z, "target_epsilon": target})
    data["run"]["rounds"] = 5
    history = _p2p(data).run(5)
    assert [m.round for m in history.rounds] == [1, 2]
    assert history.rounds[-1].extra["epsilon"] == pytest.approx(eps[1])
    assert history.rounds[-1].extra["epsilon"] <= target < eps[2]
    assert history.rounds[-1].test_accuracy is not None  # the last round run is evaluated


def test_p2p_epsilon_is_in_metrics_jsonl_and_the_summary(tmp_path: Path) -> None:
    data = _config({"mode": "local", "noise_multiplier": 2.0, "target_epsilon": 8.0})
    data["run"]["rounds"] = 2
    path = tmp_path / "p2p-dp.toml"
    path.write_text(tomli_w.dumps(data))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in lines] == [1, 2]
    for m in lines:
        assert m["epsilon"] == pytest.approx(_reference_epsilon(2.0, 1.0, m["round"]), rel=1e-9)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epsilon"] == lines[-1]["epsilon"]
    assert summary["stopped_early"] is False


def _tree(privacy: dict[str, Any]) -> dict[str, Any]:
    data = _config(privacy, kind="tree", edges=2)
    data["topology"].pop("args")
    return data


def test_hierarchical_local_dp_accounts_every_round_as_a_release() -> None:
    cfg = config_from_dict(_tree({"mode": "local", "noise_multiplier": 2.0, "clip_norm": 0.5}))
    history = build_experiment(cfg).simulation.run(2)
    for m in history.rounds:
        assert m.extra["epsilon"] == pytest.approx(_reference_epsilon(2.0, 1.0, m.round))
        assert m.train_loss is None  # no un-noised training metric leaves a client


def test_hierarchical_dp_sgd_reports_a_sample_level_epsilon() -> None:
    privacy = {"dp_sgd": True, "dp_sgd_noise_multiplier": 1.5, "target_epsilon": 50.0}
    exp = build_experiment(config_from_dict(_tree(privacy)))
    history = exp.simulation.run(2)
    smallest = min(exp.data.client_size(c) for c in range(exp.data.num_clients))
    q, steps = 16 / smallest, round(smallest / 16)
    for m in history.rounds:
        assert m.extra["sample_epsilon"] == pytest.approx(
            _reference_epsilon(1.5, q, steps * m.round), rel=1e-9
        )


def test_central_dp_without_a_trusted_noiser_is_refused_naming_the_key() -> None:
    data = _config({"mode": "central", "noise_multiplier": 1.0})
    with pytest.raises(ConfigError, match=r"privacy\.mode: .*peer-to-peer"):
        config_from_dict(data)


def test_p2p_accepts_local_dp_and_dp_sgd_and_refuses_a_server_strategy() -> None:
    data = _config({"mode": "local", "noise_multiplier": 1.0, "dp_sgd": True})
    config_from_dict(data)
    data["strategy"] = {"name": "scaffold"}  # peers have no server step: it would be ignored
    with pytest.raises(ConfigError, match=r"key 'strategy': .*peer-to-peer.*'scaffold'"):
        config_from_dict(data)
