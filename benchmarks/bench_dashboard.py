"""Dashboard update latency: a metrics.jsonl line written -> the page in chromium showing it.

Serves a run folder with ``murmura.dashboard.app`` (uvicorn, in a thread), opens it in headless
Debian chromium (Selenium), then appends one round line at a time: a thread writes it at a
recorded wall time while the page waits, with a MutationObserver, for the round count to show
it and answers its own wall time. Same machine, same clock. Prints the latency distribution.

    python benchmarks/bench_dashboard.py [--lines 40] [--poll 0.1]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from murmura.dashboard.app import create_app

WAIT_FOR_ROUND = """
const [want, done] = arguments;
const el = document.getElementById("round-count");
if (el.textContent === String(want)) { done(Date.now()); return; }
new MutationObserver((_, obs) => {
  if (el.textContent === String(want)) { obs.disconnect(); done(Date.now()); }
}).observe(el, {childList: true, characterData: true, subtree: true});
"""


def line(round_: int) -> str:
    row = {"round": round_, "participants": 4, "failures": [], "test_accuracy": 1 - 1 / round_}
    return json.dumps(row) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=40)
    ap.add_argument("--poll", type=float, default=0.1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "runs" / "bench-1"
        run.mkdir(parents=True)
        (run / "config.toml").write_text(f"[run]\nrounds = {args.lines + 1}\n")
        metrics = run / "metrics.jsonl"
        metrics.write_text(line(1))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(run.parent, poll=args.poll), port=port, log_level="error")
        )
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.01)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        driver.set_script_timeout(10)
        try:
            driver.get(f"http://127.0.0.1:{port}/#run=bench-1")
            driver.execute_async_script(WAIT_FOR_ROUND, 1)
            latencies = []
            for r in range(2, args.lines + 2):
                written: list[float] = []

                def write(r: int = r, written: list[float] = written) -> None:
                    time.sleep(0.05)  # the observer is in place first
                    with metrics.open("a") as f:
                        written.append(time.time())
                        f.write(line(r))

                writer = threading.Thread(target=write)
                writer.start()
                shown_ms = driver.execute_async_script(WAIT_FOR_ROUND, r)
                writer.join()
                latencies.append(shown_ms / 1000 - written[0])
                time.sleep(0.02 * (r % 7))  # writes at varying phases of the poll
        finally:
            driver.quit()
            server.should_exit = True
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    print(f"dashboard update latency, {len(ms)} lines, server poll {args.poll * 1000:.0f} ms:")
    print(f"  median {statistics.median(ms):.0f} ms  mean {statistics.mean(ms):.0f} ms  "
          f"p95 {p95:.0f} ms  max {ms[-1]:.0f} ms  min {ms[0]:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
