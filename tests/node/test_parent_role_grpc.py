"""A worker refuses a 'coordinator' that holds a worker certificate (issue 11, defect 3).

``murmura server`` is started with another worker's certificate and key (a stolen worker key,
or an operator's slip); ``murmura client`` dials it. Every node certificate names 127.0.0.1,
so gRPC's host check passes; the worker must still see that the certificate's role is not
``coordinator`` (nor ``edge``), stop with exit code 2 and one clear line, and send nothing:
no join, no update in the impostor's ledger. Before the fix the worker trained for it and
pushed a signed update.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from portpool import free_port

from murmura.ops.audit import LEDGER_FILE, read_records
from murmura.transport import keys

pytestmark = [pytest.mark.slow, pytest.mark.network]

EXAMPLE = Path(__file__).parents[2] / "examples" / "deploy" / "run_local.py"


def _example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_local", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_worker_refuses_a_coordinator_with_a_worker_certificate(tmp_path: Path) -> None:
    ex = _example()
    port = free_port()
    cfg = ex.write_setup(tmp_path, 1, 1, port)  # worker-0, allowlisted, 1 round
    key_dir = tmp_path / "keys"
    keys.issue(key_dir, "worker-9", "worker")
    text = cfg.read_text().replace("/coordinator.pem", "/worker-9.pem")
    cfg.write_text(text.replace("/coordinator.key", "/worker-9.key"))
    cli = [sys.executable, "-m", "murmura.node.cli"]
    with open(tmp_path / "impostor.log", "wb") as log:
        impostor = subprocess.Popen([*cli, "server", str(cfg)], stdout=log, stderr=log)
    try:
        worker = subprocess.run(
            [
                *cli,
                "client",
                "--server",
                f"127.0.0.1:{port}",
                "--partition",
                "0/1",
                "--config",
                str(cfg),
                "--cert",
                str(key_dir / "worker-0.pem"),
                "--key",
                str(key_dir / "worker-0.key"),
                "--ca",
                str(key_dir / "ca.pem"),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            timeout=120,
        )
        still_serving = impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait(10)
    said = " ".join(worker.stdout.split())
    assert worker.returncode == 2, (worker.stdout, worker.stderr)
    assert (
        f"error: the node at 127.0.0.1:{port} holds a worker certificate ('worker-9'), "
        "not a coordinator or edge certificate: refusing to work for it"
    ) in said
    assert "Traceback" not in worker.stdout + worker.stderr
    assert "training" not in worker.stderr
    assert still_serving  # it got nothing, so it was still waiting for workers
    ledger = tmp_path / "state" / LEDGER_FILE
    events = [r.event for r in read_records(ledger)] if ledger.exists() else []
    assert "join" not in events and "update_received" not in events, events
