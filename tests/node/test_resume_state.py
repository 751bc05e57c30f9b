"""A resumed coordinator keeps its strategy's state (RELIABILITY 14, 15, 23; issue 5).

Fast tests: the state goes into the round's checkpoint and comes back exactly (FedAdam's
moments, the DP accountant), through the coordinator's own open/record path; a state of
another kind, or a missing one, is refused. Process test: central DP around FedAdam over
gRPC, the coordinator SIGKILLed mid-round 3 and restarted: epsilon goes on from round 2's,
the run stops before the round that would cross ``target_epsilon``, and the final model
(which depends on FedAdam's moments) is bitwise an uninterrupted run's.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
from dp_accounting import rdp

from murmura.errors import CheckpointError
from murmura.node.checkpoint import (
    checkpoint_path,
    read_checkpoint,
    restore_strategy_state,
    strategy_state,
    write_checkpoint,
)
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.sim.runtime import Simulation
from murmura.strategy import FedAvg
from murmura.strategy.fedopt import fedadam, fedavgm
from murmura.transport.grpc_server import ServerOptions

NAMES = ["w0", "w1", "w2"]


def _procs_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "node_procs", Path(__file__).with_name("procs.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _procs_module()


def _simulation(kind: str, out: Path, target: float | None = None) -> Simulation:
    """The in-process run of procs.py's strategy and clients (no transport code shared)."""
    clients = []
    for name in NAMES:
        c = P.FakeClient(name, out, hang_round=-1)
        c.node_id = name
        clients.append(c)
    strategy = P.make_strategy(kind, 3, len(NAMES), target)
    return Simulation(strategy, clients, P.initial_weights())


def _reference_epsilon(rounds: int) -> float:
    """dp-accounting's own epsilon for ``rounds`` Poisson-sampled Gaussian steps (q = 1)."""
    acc = rdp.RdpAccountant()
    event = dp_accounting.PoissonSampledDpEvent(1.0, dp_accounting.GaussianDpEvent(P.DP_NOISE))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(P.DP_DELTA))


@pytest.mark.parametrize("kind", ["fedadam", "dp"])
def test_a_checkpointed_state_resumes_bitwise(kind: str, tmp_path: Path) -> None:
    full = _simulation(kind, tmp_path).run(4)
    first = _simulation(kind, tmp_path)
    first.run(2)
    path = checkpoint_path(tmp_path, 2)
    write_checkpoint(path, first.weights, P.LAYOUT, strategy_state(first.strategy))

    weights, saved = read_checkpoint(path, P.LAYOUT)
    resumed = _simulation(kind, tmp_path)
    restore_strategy_state(resumed.strategy, saved, str(path))
    resumed.weights = weights
    tail = resumed.run(4, start=3)
    assert tail.weights.tobytes() == full.weights.tobytes()
    assert [m.extra.get("epsilon") for m in tail.rounds] == [
        m.extra.get("epsilon") for m in full.rounds[2:]
    ]

    reset = _simulation(kind, tmp_path)  # what a resume without the state would give
    reset.weights = weights
    assert reset.run(4, start=3).weights.tobytes() != full.weights.tobytes()


def test_state_encoding_keeps_arrays_and_non_finite_floats_exact(tmp_path: Path) -> None:
    m = np.random.default_rng(1).standard_normal(7)
    state = {"kind": "x", "m": m, "n": [np.float32(0.5), float("inf"), None], "d": {"k": 3}}
    path = checkpoint_path(tmp_path, 1)
    weights = P.initial_weights()
    write_checkpoint(path, weights, P.LAYOUT, strategy_state(_Holder(state)))
    got_w, saved = read_checkpoint(path, P.LAYOUT)
    assert saved is not None and saved.strategy == "_Holder"
    assert got_w.tobytes() == weights.tobytes()
    assert saved.state["m"].dtype == np.float64 and saved.state["m"].tobytes() == m.tobytes()
    assert saved.state["n"] == [0.5, float("inf"), None] and saved.state["d"] == {"k": 3}
    with pytest.raises(CheckpointError, match=r"state\.bad: cannot store a object"):
        write_checkpoint(path, weights, P.LAYOUT, strategy_state(_Holder({"bad": object()})))


class _Holder:
    """A stateful stand-in strategy that returns a fixed state."""

    def __init__(self, state: dict[str, object]) -> None:
        self.state = state

    def state_dict(self) -> dict[str, object]:
        return self.state

    def load_state_dict(self, state: Any) -> None:
        self.state = dict(state)


def test_a_state_of_another_kind_or_a_missing_one_is_refused(tmp_path: Path) -> None:
    adam = fedadam(seed=0)
    adam.server_update(np.zeros(3, np.float32), np.ones(3, np.float32))
    path = checkpoint_path(tmp_path, 1)
    write_checkpoint(path, np.zeros(P.LAYOUT.size, np.float32), P.LAYOUT, strategy_state(adam))
    _, saved = read_checkpoint(path, P.LAYOUT)
    with pytest.raises(CheckpointError, match="does not fit FedOpt.*kind 'adam'"):
        restore_strategy_state(fedavgm(seed=0), saved, str(path))
    with pytest.raises(CheckpointError, match="keeps none"):
        restore_strategy_state(FedAvg(seed=0), saved, str(path))
    with pytest.raises(CheckpointError, match="holds no strategy state"):
        restore_strategy_state(fedadam(seed=0), None, str(path))
    restore_strategy_state(FedAvg(seed=0), None, str(path))  # stateless: nothing to restore


def _coordinator(state_dir: Path, strategy: Any) -> Coordinator:
    settings = CoordinatorSettings(state_dir=state_dir, rounds=4, run_name="unit")
    return Coordinator(strategy, P.initial_weights(), P.LAYOUT, settings, ServerOptions())


def test_the_coordinator_records_and_restores_its_strategy_state(tmp_path: Path) -> None:
    sim = _simulation("dp", tmp_path)
    first = _coordinator(tmp_path / "state", sim.strategy)
    rec = first._open_run()
    for r in (1, 2):
        first.state.start_round(rec.run_id, r)
        metrics = sim.run_round(r)
        first.weights = sim.weights
        first._record(rec.run_id, r, NAMES, metrics)
    first.state.start_round(rec.run_id, 3)  # killed in round 3
    first.state.close()

    second = _coordinator(tmp_path / "state", P.make_strategy("dp", 3, len(NAMES)))
    assert second._open_run().last_round == 2
    assert second.weights.tobytes() == sim.weights.tobytes()
    restored = second.strategy.round_metrics(2)["epsilon"]  # type: ignore[attr-defined]
    assert restored == pytest.approx(_reference_epsilon(2), rel=1e-9)
    second.state.close()
    lines = (first.run_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epsilon"] for x in lines] == [
        pytest.approx(_reference_epsilon(r), rel=1e-9) for r in (1, 2)
    ]


@pytest.mark.slow
@pytest.mark.network
def test_dp_epsilon_and_fedadam_moments_survive_a_coordinator_kill(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rounds, eps = 6, [_reference_epsilon(r) for r in range(1, 6)]
    target = (eps[3] + eps[4]) / 2  # room for four rounds, not five
    key_dir = procs.make_keys(tmp_path / "keys", NAMES)
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    common = ["--keys", str(key_dir), "--port", str(procs.free_port())]
    coord_args = ["coordinator", *common, "--state", str(state), "--rounds", str(rounds)]
    coord_args += ["--min-clients", "3", "--min-nodes", "3", "--names", ",".join(NAMES)]
    coord_args += ["--strategy", "dp", "--target-epsilon", repr(target)]
    first = procs.start("coordinator", *coord_args)
    for name in NAMES:
        args = ["--name", name, "--out", str(out), "--pause-round", "3"]
        procs.start(name, "worker", *common, *args)
    expected = _simulation("dp", tmp_path, target).run(rounds)  # while the nodes start up

    for name in NAMES:  # rounds 1-2 are completed, every worker holds round 3's model
        procs.wait_for((out / f"{name}-paused").exists, 90, f"{name} in round 3")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    restarted = procs.start("coordinator-2", *coord_args)
    (out / "release").touch()
    assert restarted.wait(90) == 0, procs.log("coordinator-2")
    assert all(procs.procs[n].wait(30) == 0 for n in NAMES)

    log = procs.log("coordinator-2")
    assert "at round 2 of" in log and "round=5: would exceed the privacy budget" in log
    lines = (procs.run_path(state) / "metrics.jsonl").read_text().splitlines()
    logged = {m["round"]: m["epsilon"] for m in map(json.loads, lines)}  # a redone round: last
    assert logged == {m.round: m.extra["epsilon"] for m in expected.rounds}
    assert sorted(logged) == [1, 2, 3, 4]
    assert [logged[r] for r in (1, 2, 3, 4)] == pytest.approx(eps[:4], rel=1e-9)
    assert procs.checkpoint(state, 4).tobytes() == expected.weights.tobytes()
    summary = json.loads((procs.run_path(state) / "summary.json").read_text())
    assert (summary["epsilon"], summary["stopped_early"], summary["rounds"]) == (
        logged[4],
        True,
        4,
    )
    db = sqlite3.connect(state / "state.sqlite")
    assert db.execute("SELECT COUNT(*), MIN(status) FROM runs").fetchone() == (1, "finished")
    db.close()
