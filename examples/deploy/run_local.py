"""Deploy murmura on this machine: fresh certificates, a coordinator and 5 workers over mTLS.

Each node is a separate process talking gRPC on 127.0.0.1; the workers train on their own
partition of the digits task and never send data, only model deltas. At the end the script
prints the final test accuracy the coordinator measured.

    python examples/deploy/run_local.py [--workers 5] [--rounds 10] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

from murmura.transport import keys

CONFIG = """
[run]
name = "deploy-demo"
seed = 0
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {workers}

[client]
epochs = 2
batch_size = 16
lr = 0.05

[strategy]
name = "fedavg"
min_clients = {min_clients}

[evaluation]
every = 1

[server]
host = "127.0.0.1"
port = {port}
cert = "{keys}/coordinator.pem"
key = "{keys}/coordinator.key"
ca = "{keys}/ca.pem"
allowlist = {allowlist}
state_dir = "{state}"
min_nodes = {workers}
round_timeout = 60
join_timeout = 120
"""


def run_path(state: Path) -> Path:
    """Folder of the coordinator's latest run (checkpoints, metrics.jsonl)."""
    return state / "runs" / (state / "latest").read_text().strip()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_setup(workdir: Path, workers: int, rounds: int, port: int) -> Path:
    """Make a CA, one certificate per node, and the deployment config; return its path."""
    key_dir = workdir / "keys"
    keys.init_ca(key_dir)
    keys.issue(key_dir, "coordinator", "coordinator")
    names = [f"worker-{i}" for i in range(workers)]
    for name in names:
        keys.issue(key_dir, name, "worker")
    cfg = workdir / "deploy.toml"
    cfg.write_text(
        CONFIG.format(
            rounds=rounds,
            workers=workers,
            min_clients=max(1, workers - 2),
            port=port,
            keys=key_dir,
            allowlist=json.dumps(names),
            state=workdir / "state",
        )
    )
    return cfg


_LOGS: list[BinaryIO] = []


def _log(path: Path) -> BinaryIO:
    fh = open(path, "wb")
    _LOGS.append(fh)
    return fh


def close_logs() -> None:
    """Close the log files ``launch`` opened."""
    while _LOGS:
        _LOGS.pop().close()


def launch(workdir: Path, cfg: Path, workers: int, port: int) -> list[subprocess.Popen[bytes]]:
    """Start the coordinator, then the workers; each logs to its own file in ``workdir``."""
    cli = [sys.executable, "-m", "murmura.node.cli"]
    key_dir = workdir / "keys"
    procs = [
        subprocess.Popen(
            [*cli, "server", str(cfg)],
            stdout=_log(workdir / "coordinator.log"),
            stderr=subprocess.STDOUT,
        )
    ]
    for i in range(workers):
        name = f"worker-{i}"
        args = [
            "client",
            "--server",
            f"127.0.0.1:{port}",
            "--partition",
            f"{i}/{workers}",
            "--config",
            str(cfg),
            "--cert",
            str(key_dir / f"{name}.pem"),
            "--key",
            str(key_dir / f"{name}.key"),
            "--ca",
            str(key_dir / "ca.pem"),
        ]
        log = _log(workdir / f"{name}.log")
        procs.append(subprocess.Popen([*cli, *args], stdout=log, stderr=subprocess.STDOUT))
    return procs


def main() -> int:
    """Set up, run, and print the final test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="murmura-deploy-"))
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = write_setup(workdir, args.workers, args.rounds, port)
    t0 = time.perf_counter()
    procs = launch(workdir, cfg, args.workers, port)
    try:
        procs[0].wait(args.timeout)
        for p in procs[1:]:
            p.wait(30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        close_logs()
    lines = (run_path(workdir / "state") / "metrics.jsonl").read_text().splitlines()
    final = json.loads(lines[-1])
    print(f"workdir: {workdir}")
    print(f"{len(lines)} rounds, {args.workers} workers, {time.perf_counter() - t0:.1f} s")
    print(f"final test accuracy: {final['test_accuracy']:.4f}")
    return 0 if procs[0].returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
