"""The coordinator's round logic through the transport seam, without a socket.

``LocalChannel`` (``murmura.transport.channel``) answers instructions in this process, like
httpx's ``MockTransport``: the same ``Coordinator.run`` that serves gRPC samples, sends the
``[client]`` config, validates, aggregates, lists failures with reasons, evaluates and
checkpoints; here its nodes are a test function, or the simulation's own clients, and it ends
with the simulation's model.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from murmura.config import config_from_dict
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.sim.builder import build_experiment
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.transport.channel import LocalChannel
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.hub import Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import EvaluateRes, FitRes, Layout, Vector

LAYOUT = Layout(("w",), ((4,),))
START = np.array([1.0, -1.0, 0.5, 0.0], np.float32)
COUNTS = {"a": 10, "b": 30}


def _settings(tmp: Path, rounds: int, **kw: object) -> CoordinatorSettings:
    return CoordinatorSettings(
        state_dir=tmp / "state",
        rounds=rounds,
        run_name="seam",
        round_timeout_s=5.0,
        join_timeout_s=0.0,
        shutdown_grace_s=0.0,
        **kw,  # type: ignore[arg-type]
    )


def _handler(node: str, out: Outgoing, weights: Vector) -> FitRes | EvaluateRes:
    """a, b: a deterministic step; c raises in round 2; d sends NaN; e evaluates."""
    if out.kind == pb.EVALUATE:
        return EvaluateRes(float(weights.sum()), 5 if node == "a" else 15, {"accuracy": 0.5})
    if node == "c" and out.round == 2:
        raise RuntimeError("disk full")
    if node == "d":
        return FitRes(np.full(4, np.nan, np.float32), 10, {})
    assert out.config["lr"] == 0.1  # the [client] config travels with every instruction
    step = np.float32(0.1 * out.round) * (1.0 if node == "a" else -1.0)
    return FitRes((weights * step).astype(np.float32), COUNTS.get(node, 20), {"train_loss": 1.0})


def _fedavg(weights: Vector, round_: int, nodes: list[str]) -> Vector:
    steps = {n: np.float32(0.1 * round_) * (1.0 if n == "a" else -1.0) for n in nodes}
    counts = {n: COUNTS.get(n, 20) for n in nodes}
    total = sum(counts.values())
    delta = sum(counts[n] / total * (weights * steps[n]) for n in nodes)
    return (weights + delta).astype(np.float32)


def test_a_round_runs_validates_fails_and_checkpoints_through_the_mock(tmp_path: Path) -> None:
    channel = LocalChannel(["a", "b", "c", "d"], _handler)
    strategy = FedAvg(min_clients=2, fraction_evaluate=1.0, min_evaluate_clients=2)
    coordinator = Coordinator(
        strategy, START, LAYOUT, _settings(tmp_path, 2, client_config={"lr": 0.1}),
        ServerOptions(port=0, insecure=True),
    )  # fmt: skip
    result = asyncio.run(coordinator.run(channel))

    want = _fedavg(_fedavg(START, 1, ["a", "b", "c"]), 2, ["a", "b"])
    np.testing.assert_allclose(result.weights, want, rtol=1e-6)
    r1, r2 = result.rounds
    assert [(f.node, f.reason.split(":")[0]) for f in r1.failures] == [("d", "update rejected")]
    assert ("c", "worker error: RuntimeError: disk full") in [
        (f.node, f.reason) for f in r2.failures
    ]
    assert (r1.participants, r2.participants) == (3, 2)
    assert r2.federated_clients == 4 and r2.federated_loss == pytest.approx(float(want.sum()))
    assert channel.finished
    assert [n for n, out in channel.sent if out.round == 1 and out.kind == pb.FIT] == list("abcd")
    lines = (coordinator.run_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]
    assert (coordinator.run_path / "checkpoints" / "round-00002.safetensors").exists()


def test_a_lost_node_fails_at_the_deadline_and_too_few_results_keep_the_model(
    tmp_path: Path,
) -> None:
    channel = LocalChannel(["a", "b"], _handler)
    channel.down.add("b")  # sampled, never answers
    coordinator = Coordinator(
        FedAvg(min_clients=2), START, LAYOUT, _settings(tmp_path, 1, client_config={"lr": 0.1}),
        ServerOptions(port=0, insecure=True),
    )  # fmt: skip
    result = asyncio.run(coordinator.run(channel))
    np.testing.assert_array_equal(result.weights, START)  # 1 result < min_clients 2
    (r1,) = result.rounds
    assert [(f.node, f.reason) for f in r1.failures] == [
        ("b", "no result before the round deadline")
    ]


def test_the_coordinator_over_in_process_learners_ends_with_the_simulations_model(
    tmp_path: Path,
) -> None:
    run = {
        "run": {"name": "seam", "rounds": 2, "seed": 5},
        "task": {"name": "digits"},
        "partition": {"kind": "quantity", "num_clients": 3},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
        "strategy": {"name": "fedadam", "server_lr": 0.05},
        "evaluation": {"every": 0},
    }
    cfg = config_from_dict(run)
    simulated = build_experiment(cfg).simulation
    assert isinstance(simulated, Simulation)
    simulated.run(2)
    exp = build_experiment(cfg)
    sim = exp.simulation
    assert isinstance(sim, Simulation)
    settings = _settings(tmp_path, 2, client_config=cfg.client.model_dump(), evaluate_every=0)
    coordinator = Coordinator(
        sim.strategy, sim.weights, exp.model.layout, settings, ServerOptions(port=0, insecure=True)
    )
    result = asyncio.run(coordinator.run(LocalChannel.of_learners(sim.clients)))
    np.testing.assert_allclose(result.weights, simulated.weights, rtol=0, atol=1e-6)


def test_every_central_evaluation_metric_reaches_the_rounds_line(tmp_path: Path) -> None:
    """A backdoor's attack success rate is recorded by the coordinator as by the simulation."""

    def central(weights: Vector) -> EvaluateRes:
        return EvaluateRes(
            float(weights.sum()), 7, {"accuracy": 0.75, "attack_success_rate": 0.125}
        )

    channel = LocalChannel(["a", "b"], _handler)
    coordinator = Coordinator(
        FedAvg(min_clients=2, evaluate_fn=central), START, LAYOUT,
        _settings(tmp_path, 1, client_config={"lr": 0.1}), ServerOptions(port=0, insecure=True),
    )  # fmt: skip
    result = asyncio.run(coordinator.run(channel))
    line = json.loads((coordinator.run_path / "metrics.jsonl").read_text().splitlines()[0])
    assert (line["test_accuracy"], line["attack_success_rate"]) == (0.75, 0.125)
    assert line["test_loss"] == pytest.approx(float(result.weights.sum()))
