"""The dashboard in a real browser during a real ``murmura run`` (headless Debian chromium)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from portpool import free_port
from selenium import webdriver
from selenium.webdriver.common.by import By

from murmura.node.state import StateStore

pytestmark = pytest.mark.slow

CONFIG = """
[run]
name = "live"
seed = 0
rounds = 80
[task]
name = "digits"
[partition]
kind = "iid"
num_clients = 4
[client]
epochs = 1
batch_size = 32
lr = 0.05
[strategy]
name = "fedavg"
fraction = 1.0
min_clients = 2
"""


def wait_for(check, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def test_page_follows_a_live_run(browser: webdriver.Chrome, tmp_path: Path) -> None:
    """The round count advances without reload, the charts draw every round, a screenshot.

    A coordinator's state (the real ``StateStore``, held open as a coordinator holds it) is
    watched too: a node it hears from mid-round shows up among the arrivals.
    """
    (tmp_path / "live.toml").write_text(CONFIG)
    runs, port, state = tmp_path / "runs", free_port(), tmp_path / "state"
    state.mkdir()
    store = StateStore(state / "state.sqlite")
    store.open_run("fed", "fed-1", {"run": {"rounds": 3}})
    store.start_round("fed-1", 1)
    store.seen("fed-1", "site-a")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    cmd = [sys.executable, "-m", "murmura"]
    dash = subprocess.Popen(
        [*cmd, "dashboard", "--runs", str(runs), "--state", str(state), "--port", str(port)],
        env=env,
        cwd=tmp_path,
    )
    run = subprocess.Popen(
        [*cmd, "run", "live.toml", "--out", str(runs)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        run_dir = wait_for(lambda: next(runs.glob("live-*"), None), 60, "the run folder")
        wait_for(lambda: (run_dir / "metrics.jsonl").exists(), 60, "the first round")
        browser.get(f"http://127.0.0.1:{port}/#run={run_dir.name}")

        def count() -> int:
            return int(browser.find_element(By.ID, "round-count").text or 0)

        first = wait_for(count, 20, "the page to show a round")
        assert run.poll() is None, "the run ended before the page loaded"
        wait_for(lambda: count() > first, 20, "the round count to advance")
        coordinator = browser.find_element(By.ID, "coordinator")
        assert "1 arrivals (site-a)" in coordinator.text
        store.seen("fed-1", "site-b")
        wait_for(lambda: "2 arrivals (site-a, site-b)" in coordinator.text, 10, "a new arrival")
        assert run.wait(timeout=60) == 0
        wait_for(lambda: browser.find_element(By.ID, "run-status").text == "complete", 10,
                 "status complete")  # fmt: skip
        assert count() == 80
        path = browser.find_element(
            By.CSS_SELECTOR, '#chart-accuracy path[data-series="test_accuracy"]'
        )
        assert path.get_attribute("d").count("L") == 79  # one vertex per round
        row = browser.find_element(By.CSS_SELECTOR, "#runs tbody tr.selected").text
        assert run_dir.name in row and "complete" in row
        assert browser.save_screenshot(str(tmp_path / "dashboard.png"))
        assert (tmp_path / "dashboard.png").stat().st_size > 10_000
    finally:
        store.close()
        for proc in (run, dash):
            proc.terminate()
            proc.wait(timeout=10)
