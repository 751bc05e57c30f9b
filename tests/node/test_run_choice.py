"""Which run a restarted coordinator opens (issue 13, item 5).

A finished run is never resumed silently: the coordinator says "run X is complete; starting
run Y". ``--new-run`` starts a new run beside an unfinished one; ``--run-id`` resumes that
unfinished run, and a finished or unknown id is refused with the known runs listed (exit 2).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from murmura.cli import app
from murmura.errors import ConfigError
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.state import StateStore
from murmura.transport.grpc_server import ServerOptions


def _procs_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "node_procs", Path(__file__).with_name("procs.py")
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _procs_module()


def _store_with_two_rounds(path: Path, run_id: str = "demo-1", name: str = "demo") -> StateStore:
    db = StateStore(path)
    assert db.open_run(name, run_id, {}).run_id == run_id
    for r in (1, 2):
        db.start_round(run_id, r)
        db.complete_round(
            run_id,
            r,
            participants=3,
            failures=[],
            checkpoint=f"c{r}",
            model_sha256="x",
            metrics={"round": r},
        )
    return db


def test_a_new_run_after_a_finished_one_says_so(tmp_path: Path) -> None:
    db = _store_with_two_rounds(tmp_path / "s.sqlite")
    db.finish_run("demo-1")
    rec = db.open_run("demo", "demo-2", {})
    assert (rec.run_id, rec.last_round) == ("demo-2", 0)
    assert rec.note == "run demo-1 is complete; starting run demo-2"
    assert db.open_run("demo", "demo-3", {}).note == ""  # demo-2 is unfinished: resumed
    assert db.open_run("other", "other-1", {}).note == ""  # a first run: nothing to say
    db.close()


def test_new_run_leaves_the_unfinished_run_and_run_id_resumes_it(tmp_path: Path) -> None:
    db = _store_with_two_rounds(tmp_path / "s.sqlite")
    rec = db.open_run("demo", "demo-2", {}, new_run=True)
    assert (rec.run_id, rec.last_round) == ("demo-2", 0)
    assert rec.note == (
        "run demo-1 is unfinished (round 2) and left as it is; --new-run: starting run demo-2"
    )
    assert db.open_run("demo", "demo-3", {}).run_id == "demo-2"  # the newest unfinished one
    rec = db.open_run("demo", "demo-4", {}, resume="demo-1")
    assert (rec.run_id, rec.last_round, rec.checkpoint) == ("demo-1", 2, "c2")
    assert [r.run_id for r in db.runs("demo")] == ["demo-1", "demo-2"]  # no run was added
    db.close()


def test_a_finished_or_unknown_run_id_is_refused_with_the_known_runs(tmp_path: Path) -> None:
    db = _store_with_two_rounds(tmp_path / "s.sqlite")
    db.finish_run("demo-1")
    db.open_run("demo", "demo-2", {})
    known = "known runs of 'demo': demo-1 (finished, round 2), demo-2 (running, round 0)"
    with pytest.raises(ConfigError, match=r"--run-id demo-1: the run is finished") as err:
        db.open_run("demo", "demo-9", {}, resume="demo-1")
    assert known in str(err.value)
    with pytest.raises(ConfigError, match=r"--run-id nope: no such run in .*s\.sqlite") as err:
        db.open_run("demo", "demo-9", {}, resume="nope")
    assert known in str(err.value)
    with pytest.raises(ConfigError, match="exclude each other"):
        db.open_run("demo", "demo-9", {}, new_run=True, resume="demo-2")
    assert [r.run_id for r in db.runs("demo")] == ["demo-1", "demo-2"]
    db.close()


def _coordinator(state_dir: Path, **choice: Any) -> Coordinator:
    settings = CoordinatorSettings(state_dir=state_dir, rounds=3, run_name="unit", **choice)
    strategy = P.make_strategy("fedavg", 3, 3)
    return Coordinator(strategy, P.initial_weights(), P.LAYOUT, settings, ServerOptions())


def test_the_coordinator_logs_the_choice_and_resumes_the_named_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    first = _coordinator(state)
    old = first._open_run().run_id
    first.state.finish_run(old)
    first.state.close()
    first.ledger.close()

    second = _coordinator(state)
    with caplog.at_level(logging.WARNING, logger="murmura.node.coordinator"):
        new = second._open_run().run_id
    assert new != old
    assert f"run {old} is complete; starting run {new}" in caplog.text
    assert (state / "latest").read_text() == new + "\n"
    second.state.close()
    second.ledger.close()

    third = _coordinator(state, new_run=True)
    newest = third._open_run().run_id
    assert newest not in (old, new)
    third.state.close()
    third.ledger.close()

    fourth = _coordinator(state, resume_run_id=new)
    assert fourth._open_run().run_id == new
    assert (state / "latest").read_text() == new + "\n"
    fourth.state.close()
    fourth.ledger.close()


def _config(tmp_path: Path, state_dir: Path) -> Path:
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[run]\nname = "small"\nrounds = 1\n[partition]\nnum_clients = 2\n'
        f'[server]\nstate_dir = "{state_dir}"\nport = 0\n'
    )
    return cfg


def test_the_cli_exits_2_with_one_line_for_an_unknown_run_id(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    _store_with_two_rounds(state_dir / "state.sqlite", "small-1", "small").close()
    cfg = _config(tmp_path, state_dir)
    result = CliRunner().invoke(app, ["server", str(cfg), "--insecure", "--run-id", "nope"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert text.startswith("error: ") and text.count("error") == 1 and "Traceback" not in text
    assert "--run-id nope: no such run" in text
    assert "known runs of 'small': small-1 (running, round 2)" in text


def test_the_cli_refuses_new_run_with_run_id(tmp_path: Path) -> None:
    cfg = _config(tmp_path, tmp_path / "state")
    result = CliRunner().invoke(
        app, ["server", str(cfg), "--insecure", "--new-run", "--run-id", "x"]
    )
    assert result.exit_code == 2, result.output
    assert "--new-run and --run-id exclude each other" in " ".join(result.output.split())
    assert not (tmp_path / "state").exists()  # refused before anything was built
