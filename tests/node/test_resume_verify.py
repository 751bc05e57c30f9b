"""Damaged checkpoints and state files are never loaded silently (RELIABILITY 25; issue 11).

Fast tests through the coordinator's own open/record path: a cut-off, missing or changed
checkpoint is named, set aside and the run resumes from the newest one that verifies; a run
that spent a privacy budget is not rewound; an empty, foreign or cut-off ``state.sqlite`` or
``audit.sqlite`` is refused (the CLI exits 2 with one line); temp files left by a crash go.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.errors import AuditError, CheckpointError, StateFileError
from murmura.node.checkpoint import checkpoint_path
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.resume import prepare_state_dir
from murmura.node.state import StateStore
from murmura.ops.audit import verify_state_dir
from murmura.sim.runtime import Simulation
from murmura.storage import load_tensors_verified, save_tensors_atomically
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


def _coordinator(state_dir: Path, kind: str) -> Coordinator:
    settings = CoordinatorSettings(state_dir=state_dir, rounds=5, run_name="unit")
    strategy = P.make_strategy(kind, 3, len(NAMES))
    return Coordinator(strategy, P.initial_weights(), P.LAYOUT, settings, ServerOptions())


def _three_rounds(tmp_path: Path, kind: str = "fedadam") -> tuple[Path, list[np.ndarray]]:
    """Rounds 1-3 recorded by a coordinator (killed in round 4); the model after each round."""
    clients = []
    for name in NAMES:
        c = P.FakeClient(name, tmp_path, hang_round=-1)
        c.node_id = name
        clients.append(c)
    sim = Simulation(P.make_strategy(kind, 3, len(NAMES)), clients, P.initial_weights())
    coord = _coordinator(tmp_path / "state", kind)
    rec = coord._open_run()
    models = [coord.weights.copy()]
    for r in (1, 2, 3):
        coord.state.start_round(rec.run_id, r)
        metrics = sim.run_round(r)
        coord.weights = sim.weights
        coord._record(rec.run_id, r, NAMES, metrics)
        models.append(sim.weights.copy())
    coord.state.start_round(rec.run_id, 4)
    coord.state.close()
    coord.ledger.close()
    return coord.run_path, models


def _statuses(state_dir: Path) -> list[tuple[int, str]]:
    db = sqlite3.connect(state_dir / "state.sqlite")
    try:
        return db.execute("SELECT round, status FROM rounds ORDER BY round").fetchall()
    finally:
        db.close()


def _resume(state_dir: Path, kind: str = "fedadam") -> Coordinator:
    coord = _coordinator(state_dir, kind)
    try:
        coord.last_round = coord._open_run().last_round  # type: ignore[attr-defined]
    finally:
        coord.state.close()
        coord.ledger.close()
    return coord


def test_a_cut_off_latest_checkpoint_falls_back_to_the_previous_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_path, models = _three_rounds(tmp_path)
    latest = checkpoint_path(run_path, 3)
    latest.write_bytes(latest.read_bytes()[:-100])
    with caplog.at_level(logging.WARNING):
        coord = _resume(tmp_path / "state")
    assert coord.last_round == 2  # type: ignore[attr-defined]
    assert coord.weights.tobytes() == models[2].tobytes()
    (warning,) = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert f"round=3: damaged checkpoint: {latest} cannot be read (cut off" in warning
    assert "resuming from round 2" in warning
    assert not latest.exists() and latest.with_name(latest.name + ".damaged").exists()
    assert _statuses(tmp_path / "state") == [
        (1, "completed"), (2, "completed"), (3, "discarded"), (4, "running"),
    ]  # fmt: skip
    lines = (run_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [1, 2]


def test_a_missing_and_a_changed_checkpoint_fall_back_two_rounds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_path, models = _three_rounds(tmp_path)
    checkpoint_path(run_path, 3).unlink()
    middle = checkpoint_path(run_path, 2)
    raw = bytearray(middle.read_bytes())
    raw[-1] ^= 0x01  # the last byte of the last tensor
    middle.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING):
        coord = _resume(tmp_path / "state")
    assert coord.last_round == 1  # type: ignore[attr-defined]
    assert coord.weights.tobytes() == models[1].tobytes()
    text = caplog.text
    assert f"{checkpoint_path(run_path, 3)} is missing" in text
    assert f"{middle}: its content does not match the SHA-256 it was written with" in text
    assert _statuses(tmp_path / "state")[1:3] == [(2, "discarded"), (3, "discarded")]


def test_a_changed_file_without_a_recorded_digest_fails_its_own_content_digest(
    tmp_path: Path,
) -> None:
    """A state file of an earlier version has no file digest: the file's own digest holds."""
    run_path, models = _three_rounds(tmp_path)
    db = sqlite3.connect(tmp_path / "state" / "state.sqlite")
    db.execute("UPDATE rounds SET file_sha256 = NULL, model_sha256 = NULL")
    db.commit()
    db.close()
    latest = checkpoint_path(run_path, 3)
    raw = bytearray(latest.read_bytes())
    at = raw.index(b'"murmura.strategy_state"')
    digit = at + next(i for i, c in enumerate(raw[at:]) if chr(c).isdigit())
    raw[digit] = ord("7") if raw[digit] != ord("7") else ord("3")  # the optimiser's state
    latest.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the SHA-256 it was written with"):
        load_tensors_verified(latest)
    assert _resume(tmp_path / "state").weights.tobytes() == models[2].tobytes()


def test_a_dp_run_is_not_rewound_over_spent_budget(tmp_path: Path) -> None:
    run_path, _ = _three_rounds(tmp_path, "dp")
    latest = checkpoint_path(run_path, 3)
    latest.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        _resume(tmp_path / "state", "dp")
    msg = str(info.value)
    assert f"{latest} cannot be read" in msg and "privacy budget (epsilon " in msg
    assert "resuming from round 2 would run rounds 3-3 again" in msg and "backup" in msg
    assert latest.exists() and not latest.with_name(latest.name + ".damaged").exists()
    assert _statuses(tmp_path / "state")[2] == (3, "completed")  # nothing changed


def test_no_good_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    run_path, _ = _three_rounds(tmp_path)
    for r in range(4):
        path = checkpoint_path(run_path, r)
        path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match=r"no checkpoint of run unit-\w+ verifies \(.*"):
        _resume(tmp_path / "state")
    assert not list(run_path.glob("checkpoints/*.damaged"))


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"this is not a database" * 100, "is not a SQLite database"),
        (None, "cannot be read|is damaged"),  # a real state file cut in half
    ],
)
@pytest.mark.parametrize("name", ["state.sqlite", "audit.sqlite"])
def test_a_broken_state_file_is_refused(
    tmp_path: Path, name: str, content: bytes | None, why: str
) -> None:
    state_dir = tmp_path / "state"
    _three_rounds(tmp_path)
    path = state_dir / name
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if content is None else content)
    before = path.read_bytes()
    with pytest.raises(StateFileError, match=f"{re.escape(str(path))} ({why}).*move the state"):
        _coordinator(state_dir, "fedadam")
    assert path.read_bytes() == before  # not replaced by a new, empty database


@pytest.mark.parametrize("name", ["state.sqlite", "audit.sqlite"])
def test_a_missing_state_file_next_to_checkpoints_is_refused(tmp_path: Path, name: str) -> None:
    _three_rounds(tmp_path)
    (tmp_path / "state" / name).unlink()
    with pytest.raises(StateFileError, match=f"{name} is missing, but .*holds checkpoints"):
        _coordinator(tmp_path / "state", "fedadam")


def test_the_cli_exits_2_with_one_line_for_a_garbage_state_file(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "state.sqlite").write_bytes(b"\x00garbage" * 64)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[run]\nname = "small"\nrounds = 1\n[partition]\nnum_clients = 2\n'
        f'[server]\nstate_dir = "{state_dir}"\nport = 0\n'
    )
    result = CliRunner().invoke(app, ["server", str(cfg), "--insecure"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # rich wraps the line at the runner's width
    assert text.startswith("error: ") and text.count("error") == 1
    assert f"{state_dir / 'state.sqlite'} is not a SQLite database" in text
    assert "move the state dir aside to start a new run" in text and "Traceback" not in text


def test_orphan_temp_files_are_removed_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_path, _ = _three_rounds(tmp_path)
    orphans = [
        run_path / "checkpoints" / ".round-00004.safetensors.4242.tmp",
        run_path / ".summary.json.tmp",
        tmp_path / "state" / ".state.sqlite.77.tmp",
    ]
    for p in orphans:
        p.write_bytes(b"half")
    kept = run_path / "checkpoints" / "notes.txt"
    kept.write_text("mine")
    with caplog.at_level(logging.WARNING):
        prepare_state_dir(tmp_path / "state")
    assert not any(p.exists() for p in orphans) and kept.exists()
    for p in orphans:
        assert f"removed {p}, a temporary file left by a crash" in caplog.text
    assert _resume(tmp_path / "state").last_round == 3  # type: ignore[attr-defined]


def test_a_state_file_of_an_earlier_version_gains_the_file_digest(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(
        "CREATE TABLE rounds (run_id TEXT NOT NULL, round INTEGER NOT NULL, status TEXT "
        "NOT NULL, participants INTEGER NOT NULL DEFAULT 0, failures TEXT NOT NULL DEFAULT "
        "'[]', checkpoint TEXT, model_sha256 TEXT, metrics TEXT NOT NULL DEFAULT '{}', "
        "started REAL NOT NULL, ended REAL, PRIMARY KEY (run_id, round))"
    )
    db.execute("INSERT INTO rounds VALUES ('r', 1, 'completed', 3, '[]', 'c1', 'x', '{}', 0, 1)")
    db.commit()
    db.close()
    store = StateStore(path)
    (saved,) = store.saved_rounds("r")
    assert (saved.round, saved.checkpoint, saved.model_sha256, saved.file_sha256) == (
        1, "c1", "x", None,
    )  # fmt: skip
    store.close()


def test_every_safetensors_file_carries_its_content_digest(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    a = np.arange(6, dtype=np.float32)
    save_tensors_atomically(path, {"a": a}, {"k": "v"})
    tensors, meta = load_tensors_verified(path)
    assert meta == {"k": "v"} and tensors["a"].tobytes() == a.tobytes()
    raw = bytearray(path.read_bytes())
    raw[-4] ^= 0x80  # the sign of a[5]
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the SHA-256"):
        load_tensors_verified(path)
    with pytest.raises(CheckpointError, match="is missing"):
        load_tensors_verified(tmp_path / "none.safetensors")


def test_audit_verify_names_a_cut_off_checkpoint_and_skips_a_set_aside_one(
    tmp_path: Path,
) -> None:
    run_path, _ = _three_rounds(tmp_path)
    latest = checkpoint_path(run_path, 3)
    latest.write_bytes(latest.read_bytes()[:40])
    with pytest.raises(AuditError, match=f"{re.escape(str(latest))}: cannot read its pinned head"):
        verify_state_dir(tmp_path / "state")
    _resume(tmp_path / "state")  # renames it *.damaged
    assert verify_state_dir(tmp_path / "state").ok
