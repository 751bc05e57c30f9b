"""Peer-to-peer on this machine: fresh certificates and 8 peers on a ring over mTLS gRPC.

No coordinator: each peer is its own process (``murmura peer CONFIG --id K``), trains on its
block of the digits clients, serves its model and mixes with its two ring neighbours every
round (gossip learning with Metropolis-Hastings weights). At the end the script prints each
peer's final test accuracy and their mean.

    python examples/deploy/run_ring.py [--peers 8] [--rounds 20] [--workdir DIR] [--kill 3]

``--kill K`` SIGKILLs peer K after its third round and starts it again a little later: its
neighbours skip it meanwhile, and it resumes from its own checkpoint and rejoins.
"""

from __future__ import annotations

import argparse
import json
import signal
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
name = "ring-demo"
seed = 0
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {peers}

[client]
epochs = 1
batch_size = 16
lr = 0.05

[evaluation]
every = 5

[topology]
kind = "ring"
algorithm = "gossip"

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = 3.0
join_timeout = 60.0
round_period = 0.3
"""


def free_ports(n: int) -> list[int]:
    """``n`` TCP ports on 127.0.0.1 that nobody listens on right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def write_setup(workdir: Path, peers: int, rounds: int) -> Path:
    """Make a CA, one certificate per peer, and the P2P deployment config; return its path."""
    key_dir = workdir / "keys"
    keys.init_ca(key_dir)
    for i in range(peers):
        keys.issue(key_dir, f"peer-{i}", "worker")
    cfg = workdir / "ring.toml"
    addresses = [f"127.0.0.1:{p}" for p in free_ports(peers)]
    cfg.write_text(
        CONFIG.format(
            rounds=rounds,
            peers=peers,
            addresses=json.dumps(addresses),
            keys=key_dir,
            state=workdir / "state",
        )
    )
    return cfg


_LOGS: list[BinaryIO] = []


def start_peer(workdir: Path, cfg: Path, i: int) -> subprocess.Popen[bytes]:
    """Start peer ``i``; it logs to ``workdir/peer-i.log``."""
    log = open(workdir / f"peer-{i}.log", "ab")
    _LOGS.append(log)
    cmd = [sys.executable, "-m", "murmura.node.topology_cli", "peer", str(cfg), "--id", str(i)]
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def metrics(workdir: Path, i: int) -> list[dict[str, object]]:
    """Peer ``i``'s metrics lines so far."""
    path = workdir / "state" / f"peer-{i}" / "metrics.jsonl"
    text = path.read_text() if path.exists() else ""
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def kill_and_restart(
    workdir: Path, cfg: Path, procs: list[subprocess.Popen[bytes]], k: int
) -> None:
    """SIGKILL peer ``k`` after its third round; start it again 3 s later."""
    while len(metrics(workdir, k)) < 3 and procs[k].poll() is None:
        time.sleep(0.05)
    procs[k].send_signal(signal.SIGKILL)
    procs[k].wait()
    print(f"killed peer-{k} after round {len(metrics(workdir, k))}")
    time.sleep(3.0)
    procs[k] = start_peer(workdir, cfg, k)
    print(f"restarted peer-{k}")


def main() -> int:
    """Set up, run, and print every peer's final test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--kill", type=int, default=None, help="kill and restart this peer")
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="murmura-ring-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = write_setup(workdir, args.peers, args.rounds)
    t0 = time.perf_counter()
    procs = [start_peer(workdir, cfg, i) for i in range(args.peers)]
    try:
        if args.kill is not None:
            kill_and_restart(workdir, cfg, procs, args.kill)
        codes = [p.wait(args.timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        while _LOGS:
            _LOGS.pop().close()
    finals = [metrics(workdir, i)[-1] for i in range(args.peers)]
    accs = [float(str(m.get("test_accuracy", "nan"))) for m in finals]
    print(f"workdir: {workdir}")
    print(f"{args.peers} peers, {args.rounds} rounds, {time.perf_counter() - t0:.1f} s")
    for i, acc in enumerate(accs):
        print(f"peer-{i}: final test accuracy {acc:.4f}")
    print(f"mean final test accuracy: {sum(accs) / len(accs):.4f}")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    sys.exit(main())
