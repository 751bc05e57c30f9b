"""``[server] keep_last``: the coordinator keeps the newest N round checkpoints and round 0.

The pruning function on its own, then the coordinator's own ``_record`` path driven in
process for 6 rounds (no transport), and a resume of what is left on disk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from murmura.node.checkpoint import prune_checkpoints
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.deploy import ServerSection
from murmura.sim.runtime import Simulation
from murmura.transport.grpc_server import ServerOptions

NAMES = ["w0", "w1", "w2"]


def _module(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"node_{name}", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _module("procs")


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_prune_keeps_the_newest_and_round_zero(tmp_path: Path) -> None:
    _touch(tmp_path, *(f"round-{r:05d}.safetensors" for r in range(7)))
    _touch(tmp_path, "round-00002.safetensors.damaged", "notes.txt")
    gone = prune_checkpoints(tmp_path, 3)
    assert sorted(p.name for p in gone) == [f"round-{r:05d}.safetensors" for r in (1, 2, 3)]
    assert _files(tmp_path) == [
        "notes.txt",
        "round-00000.safetensors",
        "round-00002.safetensors.damaged",
        "round-00004.safetensors",
        "round-00005.safetensors",
        "round-00006.safetensors",
    ]
    assert prune_checkpoints(tmp_path, 3) == []  # idempotent


@pytest.mark.parametrize("keep", [0, 1, 10])
def test_prune_zero_keeps_all_and_one_keeps_the_newest(tmp_path: Path, keep: int) -> None:
    _touch(tmp_path, *(f"round-{r:05d}.safetensors" for r in range(5)))
    prune_checkpoints(tmp_path, keep)
    expected = {0: range(5), 1: (0, 4), 10: range(5)}[keep]
    assert _files(tmp_path) == [f"round-{r:05d}.safetensors" for r in expected]


def test_server_section_keeps_three_by_default() -> None:
    assert ServerSection().keep_last == 3
    with pytest.raises(ValueError, match="keep_last"):
        ServerSection(keep_last=-1)


def _simulation(out: Path) -> Simulation:
    """procs.py's strategy and clients run in process: the rounds ``_record`` checkpoints."""
    clients = []
    for name in NAMES:
        c = P.FakeClient(name, out, hang_round=-1)
        c.node_id = name
        clients.append(c)
    return Simulation(P.make_strategy("fedadam", 3, len(NAMES)), clients, P.initial_weights())


def _coordinator(state_dir: Path, keep_last: int) -> Coordinator:
    settings = CoordinatorSettings(
        state_dir=state_dir, rounds=8, run_name="unit", keep_last=keep_last
    )
    strategy = P.make_strategy("fedadam", 3, len(NAMES))
    return Coordinator(strategy, P.initial_weights(), P.LAYOUT, settings, ServerOptions())


def test_coordinator_keeps_keep_last_checkpoints_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = _simulation(tmp_path)
    first = _coordinator(tmp_path / "state", keep_last=3)
    rec = first._open_run()
    for r in range(1, 7):
        first.state.start_round(rec.run_id, r)
        metrics = sim.run_round(r)
        first.weights = sim.weights
        first._record(rec.run_id, r, NAMES, metrics)
    first.state.close()
    first.ledger.close()
    folder = first.run_path / "checkpoints"
    assert _files(folder) == [f"round-{r:05d}.safetensors" for r in (0, 4, 5, 6)]

    second = _coordinator(tmp_path / "state", keep_last=3)
    assert second._open_run().last_round == 6
    assert second.weights.tobytes() == sim.weights.tobytes()
    second.state.close()
    second.ledger.close()

    (folder / "round-00006.safetensors").write_bytes(b"cut off")  # newest damaged: fall back
    third = _coordinator(tmp_path / "state", keep_last=3)
    assert third._open_run().last_round == 5
    third.state.close()
    third.ledger.close()

    for r in (4, 5):  # every kept round damaged: the pruned ones are missing, round 0 is left
        (folder / f"round-{r:05d}.safetensors").write_bytes(b"cut off")
    caplog.clear()
    fourth = _coordinator(tmp_path / "state", keep_last=3)
    assert fourth._open_run().last_round == 0
    damaged = [r for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert sorted(r.getMessage().split("round-")[1][:5] for r in damaged) == ["00004", "00005"]
    assert fourth.weights.tobytes() == P.initial_weights().tobytes()
    fourth.state.close()
    fourth.ledger.close()


def test_checkpoint_every_k_rounds_and_a_restart_runs_the_others_again(tmp_path: Path) -> None:
    """k = 3 over 7 of 8 rounds: files 0, 3, 6; a restart resumes at 6 and reruns round 7."""
    sim = _simulation(tmp_path)
    settings = CoordinatorSettings(
        state_dir=tmp_path / "state", rounds=8, run_name="unit", checkpoint_every=3, keep_last=0
    )
    first = Coordinator(
        P.make_strategy("fedadam", 3, len(NAMES)), P.initial_weights(), P.LAYOUT, settings,
        ServerOptions(),
    )  # fmt: skip
    rec = first._open_run()
    after: dict[int, bytes] = {}
    for r in range(1, 8):
        first.state.start_round(rec.run_id, r)
        metrics = sim.run_round(r)
        first.weights = sim.weights
        first._record(rec.run_id, r, NAMES, metrics)
        after[r] = sim.weights.tobytes()
    first.state.close()
    first.ledger.close()
    folder = first.run_path / "checkpoints"
    assert _files(folder) == [f"round-{r:05d}.safetensors" for r in (0, 3, 6)]

    second = Coordinator(
        P.make_strategy("fedadam", 3, len(NAMES)), P.initial_weights(), P.LAYOUT, settings,
        ServerOptions(),
    )  # fmt: skip
    got = second._open_run()
    assert got.last_round == 6 and second.weights.tobytes() == after[6]
    lines = (second.run_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6  # round 7's line dropped: it is run again
    assert [r["round"] for r in second.state.rounds(rec.run_id) if r["status"] == "completed"] == [
        1, 2, 3, 4, 5, 6,
    ]  # fmt: skip
    second.state.close()
    second.ledger.close()


def test_checkpoint_every_is_refused_with_differential_privacy() -> None:
    from murmura.config import config_from_dict
    from murmura.errors import ConfigError
    from murmura.node.deploy import build_coordinator

    cfg = config_from_dict({"privacy": {"mode": "central", "noise_multiplier": 1.0}})
    with pytest.raises(ConfigError, match=r"\[server\] checkpoint_every = 2 .* twice"):
        build_coordinator(cfg, ServerSection(checkpoint_every=2), insecure=True)


def test_the_coordinator_writes_the_run_folder_of_a_simulated_run(tmp_path: Path) -> None:
    """config.toml at open; summary, plot and a labelled model.safetensors at the end."""
    from safetensors import safe_open

    from murmura.ops.run_dir import config_sha256

    resolved = {"run": {"name": "unit", "rounds": 2}, "strategy": {"name": "fedadam"}}
    sim = _simulation(tmp_path)
    settings = CoordinatorSettings(
        state_dir=tmp_path / "state", rounds=2, run_name="unit", config=resolved
    )
    coord = Coordinator(
        P.make_strategy("fedadam", 3, len(NAMES)), P.initial_weights(), P.LAYOUT, settings,
        ServerOptions(),
    )  # fmt: skip
    rec = coord._open_run()
    assert "rounds = 2" in (coord.run_path / "config.toml").read_text()
    for r in (1, 2):
        coord.state.start_round(rec.run_id, r)
        metrics = sim.run_round(r)
        coord.weights = sim.weights
        coord._record(rec.run_id, r, NAMES, metrics)
    summary = coord._write_outputs(rec.run_id)
    coord.state.close()
    coord.ledger.close()
    run = coord.run_path
    assert {"config.toml", "metrics.jsonl", "summary.json", "accuracy.png"} <= set(_files(run))
    assert summary["rounds"] == 2 and summary["status"] == "complete"
    with safe_open(str(run / "model.safetensors"), "np") as fh:
        meta = fh.metadata()
        model = {k: fh.get_tensor(k) for k in fh.keys()}
    assert meta["murmura.run_id"] == rec.run_id and meta["murmura.round"] == "2"
    assert meta["murmura.config_sha256"] == config_sha256(resolved)
    assert meta["murmura.strategy"] == "fedadam" and meta["murmura.version"]
    flat = np.concatenate([model[n].ravel() for n in P.LAYOUT.names])
    assert flat.tobytes() == sim.weights.tobytes()
