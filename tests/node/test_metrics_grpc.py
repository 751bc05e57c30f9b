"""The Prometheus endpoint of a real gRPC run over mTLS, scraped over HTTP with urllib.

A worker outside the allowlist is refused; two allowlisted workers train two rounds (``w0``
waits in round 1 until the test has scraped once). The counters then match what travelled:
2 rounds completed, one allowlist refusal, and exactly the update bytes the workers pushed
(each saved its update): the byte counters count float32 payloads, not protocol framing.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.slow, pytest.mark.network]

SCRIPT = Path(__file__).with_name("metrics_procs.py")
NAMES = ["w0", "w1"]


def scrape(url: str) -> dict[str, float] | None:
    """``{sample name{labels}: value}`` of one scrape; None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = resp.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def wait_scrape(url: str, cond, timeout: float = 60.0) -> dict[str, float]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = scrape(url)
        if got is not None and cond(got):
            return got
        time.sleep(0.05)
    raise TimeoutError(f"no scrape of {url} met the condition; last: {got}")


def test_metrics_of_a_grpc_run(procs, ports, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", [*NAMES, "intruder"])
    state, out = tmp_path / "state", tmp_path / "out"
    out.mkdir()
    grpc_port, metrics_port = ports(2)
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    common = ["--keys", str(key_dir), "--port", str(grpc_port)]
    coord = procs.start(
        "coordinator", *common, "--metrics-port", str(metrics_port), "--state", str(state),
        "--names", ",".join(NAMES), "--rounds", "2", "--grace", "2", script=SCRIPT,
    )  # fmt: skip
    intruder = procs.start("intruder", "worker", *common, "--name", "intruder", "--out", str(out))
    for name in NAMES:
        pause = ["--pause-round", "1"] if name == "w0" else []
        procs.start(name, "worker", *common, "--name", name, "--out", str(out), *pause)
    assert intruder.wait(60) == 0, procs.log("intruder")  # refused: it stops
    procs.wait_for(lambda: (out / "w0-paused").exists(), 60, "w0 in round 1")

    during = wait_scrape(url, lambda m: m["murmura_workers_connected{}"] == 2)
    assert during["murmura_current_round{}"] == 1
    assert during["murmura_rounds_completed_total{}"] == 0
    assert during["murmura_refusals_total{kind=allowlist}"] == 1
    assert during["murmura_joins_total{}"] == 2

    (out / "release").touch()
    after = wait_scrape(url, lambda m: m["murmura_rounds_completed_total{}"] == 2)
    assert coord.wait(60) == 0, procs.log("coordinator")

    pushed = sum(
        np.load(out / f"{name}-r{rnd}.npy", allow_pickle=False).nbytes
        for name in NAMES
        for rnd in (1, 2)
    )
    assert pushed == 2 * 2 * 4 * 100  # 2 workers x 2 rounds x 100 float32 parameters
    assert after["murmura_update_received_bytes_total{}"] == pushed
    assert after["murmura_model_sent_bytes_total{}"] == pushed  # same layout, same count
    assert after["murmura_rounds_planned{}"] == 2 and after["murmura_current_round{}"] == 2
    assert after["murmura_round_participants_total{}"] == 4
    assert after["murmura_results_received_total{phase=fit}"] == 4
    assert after["murmura_round_duration_seconds_count{}"] == 2
    assert after["murmura_round_duration_seconds_sum{}"] > 0
    failures = {k: v for k, v in after.items() if k.startswith("murmura_round_failures_total")}
    assert failures and not any(failures.values())
    refusals = {k: v for k, v in after.items() if k.startswith("murmura_refusals_total")}
    assert refusals.pop("murmura_refusals_total{kind=allowlist}") == 1
    assert not any(refusals.values())
    run_id = (state / "latest").read_text().strip()
    assert after[f"murmura_run_info{{run_id={run_id}}}"] == 1
