"""Federated evaluation in the simulation: sampled clients evaluate on their held-out data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from murmura.cli import app
from murmura.config import config_from_dict
from murmura.data import LocalHoldout
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

DIGITS = {
    "run": {"rounds": 6, "seed": 2},
    "partition": {"kind": "dirichlet", "num_clients": 20, "alpha": 0.5},
    "client": {"epochs": 3, "batch_size": 16, "lr": 0.1},
    "evaluation": {"federated": True, "fraction": 1.0, "local_fraction": 0.2},
}


def test_digits_federated_accuracy_is_the_held_out_accuracy_and_tracks_central() -> None:
    exp = build_experiment(config_from_dict(DIGITS))
    history = exp.simulation.run(6)
    data = exp.data
    assert isinstance(data, LocalHoldout)
    held = [len(data.client_eval(c)[1]) for c in range(20)]
    for m in history.rounds:
        line = m.to_json()
        assert line["federated_clients"] == sum(h > 0 for h in held) and not m.failures
        assert line["federated_examples"] == sum(held)
        assert line["test_accuracy"] is not None  # central figures stay, side by side
    # the reported figure is the accuracy over the union of the held-out sets, recomputed here
    exp.model.set(history.weights)
    with torch.no_grad():
        correct = sum(
            int((exp.model.module(x).argmax(1) == y).sum())
            for x, y in (data.client_eval(c) for c in range(20))
        )
    last = history.rounds[-1]
    assert last.federated_accuracy == pytest.approx(correct / sum(held), abs=1e-12)
    assert last.test_accuracy is not None and last.federated_accuracy is not None
    assert last.test_accuracy > 0.8 and last.federated_accuracy > 0.75
    # ~290 held-out samples: 3 binomial standard deviations is about 0.055
    assert abs(last.federated_accuracy - last.test_accuracy) < 0.07
    assert last.federated_loss is not None and last.test_loss is not None
    assert abs(last.federated_loss - last.test_loss) < 0.25


class Fixed:
    """Trains to a fixed delta and evaluates to fixed figures (or raises, or returns NaN)."""

    def __init__(self, node_id: str, n: int, acc: float, loss: float = 1.0) -> None:
        self.node_id, self.n, self.acc, self.loss = node_id, n, acc, loss

    def fit(self, ins: FitIns) -> FitRes:
        return FitRes(np.ones_like(ins.weights), 10, {"train_loss": 1.0})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        if self.acc < 0:
            raise RuntimeError("held-out shard unreadable")
        return EvaluateRes(self.loss, self.n, {"accuracy": self.acc})


def test_a_raising_or_nan_client_is_a_failure_and_the_round_goes_on() -> None:
    clients = [
        Fixed("a", 10, 0.5, loss=2.0),
        Fixed("b", 30, 0.9, loss=1.0),
        Fixed("c", 0, 0.0),  # nothing held out: no failure, no weight
        Fixed("bad", 5, -1.0),
        Fixed("nan", 50, 0.1, loss=float("nan")),
    ]
    sim = Simulation(FedAvg(fraction_evaluate=1.0), clients, np.zeros(3, np.float32))
    m = sim.run_round(1, final=True)
    assert m.participants == 5 and np.allclose(sim.weights, 1.0)
    reasons = {f.node: f.reason for f in m.failures}
    assert reasons == {
        "bad": "evaluate: client raised RuntimeError: held-out shard unreadable",
        "nan": "evaluate: rejected: evaluation loss nan is not a finite number",
    }
    assert m.federated_clients == 2
    assert m.federated_accuracy == pytest.approx((10 * 0.5 + 30 * 0.9) / 40)
    assert m.federated_loss == pytest.approx((10 * 2.0 + 30 * 1.0) / 40)
    assert json.loads(json.dumps(m.to_json()))["federated_accuracy"] == m.federated_accuracy


def test_every_k_rounds_and_the_last_and_only_the_sampled_fraction() -> None:
    clients = [Fixed(f"n{i}", 10, 0.5) for i in range(10)]
    strategy = FedAvg(fraction_evaluate=0.3, min_evaluate_clients=2, seed=5)
    sim = Simulation(strategy, clients, np.zeros(3, np.float32), evaluate_every=2)
    rounds = sim.run(5).rounds
    assert [m.federated_clients for m in rounds] == [None, 3, None, 3, 3]
    assert "federated_accuracy" not in rounds[0].to_json()


def test_central_off_leaves_the_federated_figures_in_the_run_directory(tmp_path: Path) -> None:
    cfg = tmp_path / "fed.toml"
    cfg.write_text(
        '[run]\nname = "fed"\nrounds = 2\n[partition]\nkind = "iid"\nnum_clients = 6\n'
        "[client]\nlr = 0.1\n[evaluation]\ncentral = false\nfederated = true\nfraction = 0.5\n"
        "local_fraction = 0.2\n"
    )
    result = CliRunner().invoke(app, ["run", str(cfg), "--out", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(x["test_accuracy"] is None and x["federated_clients"] == 3 for x in lines)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_test_accuracy"] is None
    assert summary["final_federated_accuracy"] == lines[-1]["federated_accuracy"] > 0.5
    assert "final federated accuracy" in result.output


@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"evaluation": {"federated": True, "min_clients": 11}}, "evaluation.min_clients = 11"),
        ({"evaluation": {"federated": True, "fraction": 0}}, "evaluation.fraction"),
        ({"evaluation": {"federated": True, "local_fraction": 1.0}}, "evaluation.local_fraction"),
        (
            {"evaluation": {"federated": True}, "topology": {"kind": "ring"}},
            "needs a server-client run",
        ),
        (
            {"evaluation": {"federated": True}, "privacy": {"mode": "local"}},
            "not trusted under local DP",
        ),
    ],
)
def test_config_refuses_what_cannot_work(extra: dict[str, object], pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        config_from_dict(extra, "run.toml")
