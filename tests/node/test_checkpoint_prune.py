"""``[server] keep_last``: the coordinator keeps the newest N round checkpoints and round 0.

The pruning function on its own, then the coordinator's own ``_record`` path driven in
process for 6 rounds (no transport), and a resume of what is left on disk.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

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
