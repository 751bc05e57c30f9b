"""The dashboard's readers: run folders, path checks, a coordinator's SQLite state; the server."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from portpool import free_port

from murmura.dashboard import sources
from murmura.dashboard.app import create_app
from murmura.node.state import StateStore


def make_run(root: Path, name: str, rounds: int, summary: dict[str, object] | None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "config.toml").write_text(
        f"[run]\nname = 'x'\nrounds = {rounds + 2}\n[privacy]\ntarget_epsilon = 3.0\n"
    )
    lines = [
        json.dumps({"round": r, "participants": 4, "test_accuracy": 0.1 * r, "epsilon": 0.5 * r,
                    "failures": [{"node": "c3", "reason": "timeout"}] if r == 2 else []})
        for r in range(1, rounds + 1)
    ]  # fmt: skip
    (path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"round": 9, "partic')  # cut off
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_a_run_in_progress_and_a_finished_one(tmp_path: Path) -> None:
    live = make_run(tmp_path, "live-1", 3, None)
    make_run(tmp_path, "done-1", 2, {"status": "complete", "planned_rounds": 2})
    (tmp_path / "not-a-run").mkdir()
    listed = {r["id"]: r for r in sources.list_runs(tmp_path)}
    assert listed.keys() == {"live-1", "done-1"}
    assert listed["live-1"]["status"] == "running" and listed["live-1"]["planned"] == 5
    assert listed["done-1"] == {
        "id": "done-1", "status": "complete", "rounds": 2, "planned": 2, "accuracy": 0.2
    }  # fmt: skip
    detail = sources.run_detail(live)
    assert detail["rounds"] == 3  # the cut-off line is skipped
    assert detail["series"]["epsilon"] == [[1, 0.5], [2, 1.0], [3, 1.5]]
    assert detail["series"]["failures"] == [[1, 0], [2, 1], [3, 0]]
    assert detail["target_epsilon"] == 3.0
    assert detail["failures"] == [{"round": 2, "node": "c3", "reason": "timeout"}]
    assert "consensus_distance" not in detail["series"]


@given(st.text(max_size=30))
def test_no_run_id_reaches_outside_the_runs_folder(tmp_path_factory, run_id: str) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.getbasetemp() / "root" / "runs"
    root.mkdir(parents=True, exist_ok=True)
    path = sources.run_path(root, run_id)
    assert path is None or path.parent == root.resolve()


@pytest.mark.parametrize("bad", ["..", ".", "../runs", "a/../..", "/etc", "%2e%2e", ""])
def test_traversal_is_refused(tmp_path: Path, bad: str) -> None:
    (tmp_path / "runs").mkdir()
    assert sources.run_path(tmp_path / "runs", bad) is None


def test_a_live_coordinator_from_its_state(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite")
    store.open_run("fed", "fed-1", {"run": {"rounds": 3}})
    store.seen("fed-1", "site-a")
    time.sleep(0.01)
    store.start_round("fed-1", 1)
    time.sleep(0.01)
    store.seen("fed-1", "site-b")
    store.close()
    before = (tmp_path / "state.sqlite").read_bytes()
    state = sources.coordinator_state(tmp_path, now=time.time() + 5)
    assert state is not None and state["run_id"] == "fed-1"
    assert state["round"] == {"round": 1, "status": "running", "participants": 0,
                              "arrivals": ["site-b"]}  # fmt: skip
    assert [n["node"] for n in state["nodes"]] == ["site-a", "site-b"]
    assert all(5 <= n["last_seen_ago"] < 6 for n in state["nodes"])
    assert (tmp_path / "state.sqlite").read_bytes() == before  # read-only
    assert sources.coordinator_state(tmp_path / "nowhere") is None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    make_run(tmp_path / "runs", "r-1", 2, None)
    (tmp_path / "secret.txt").write_text("no")
    config = uvicorn.Config(create_app(tmp_path / "runs"), port=port, log_level="error")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(5)


@pytest.mark.network
def test_the_server_answers_and_refuses_traversal(server: str) -> None:
    with urllib.request.urlopen(f"{server}/api/runs/r-1") as r:
        assert json.load(r)["rounds"] == 2
    for bad in ("/api/runs/..%2Fsecret.txt", "/api/runs/..", "/static/..%2F..%2Fsecret.txt",
                "/api/events?run=..%2F"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server + bad)
        assert err.value.code == 404
        err.value.close()
    with urllib.request.urlopen(f"{server}/api/events?run=r-1") as stream:
        first = stream.readline()
    assert json.loads(first.removeprefix(b"data: "))["run"]["rounds"] == 2
    with urllib.request.urlopen(f"{server}/api/events?run=r-2") as stream:  # not there yet
        first = stream.readline()
    assert json.loads(first.removeprefix(b"data: "))["run"] is None
