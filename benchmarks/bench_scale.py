"""W4 benchmark: how many registered clients one machine holds.

W2's generator (Synthetic(1, 1), lazily generated clients) with 10,000 and 100,000 clients,
1% sampled per round, 5 rounds. Each size runs in its own child process; printed per size:
seconds to build the run, seconds per round, peak RSS (``wait4``'s ``ru_maxrss``), and memory
per registered client (RSS after building minus RSS before, over the number of clients, so
including the evaluation data), and the marginal memory per client between two sizes.
Central evaluation uses the held-out parts of the first ``--eval-clients`` clients (the
union over 100,000 clients would be ~10 GB of test data by itself). Target: 100,000
registered clients under 4 GB peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 4096


def rss_mb() -> float:
    """This process's resident set size now, in MB."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(clients: int, rounds: int, executor: str, eval_clients: int) -> dict[str, object]:
    """Build and run W4 at one size in this process; figures as a dict."""
    from murmura.config import config_from_dict
    from murmura.sim.builder import build_experiment
    from murmura.sim.runtime import Simulation

    cfg = config_from_dict(
        {
            "run": {"name": "w4", "rounds": rounds, "seed": 0},
            "task": {"name": "synthetic", "args": {"eval_clients": eval_clients}},
            "partition": {"kind": "natural", "num_clients": clients},
            "client": {"epochs": 1, "batch_size": 10, "lr": 0.01},
            "strategy": {"name": "fedavg", "fraction": 0.01, "min_clients": 2},
            "simulation": {"executor": executor},
        }
    )
    before = rss_mb()
    t0 = time.perf_counter()
    exp = build_experiment(cfg)
    build_s = time.perf_counter() - t0
    registered = rss_mb()
    sim = exp.simulation
    assert isinstance(sim, Simulation)
    t0 = time.perf_counter()
    history = sim.run(rounds)
    loop_s = time.perf_counter() - t0
    return {
        "clients": clients,
        "executor": type(sim.executor).__name__,
        "build_s": build_s,
        "s_per_round": loop_s / rounds,
        "kb_per_client": (registered - before) * 1024 / clients,
        "registered_mb": registered,
        "accuracy": history.rounds[-1].test_accuracy,
        "cohort": history.rounds[-1].participants,
    }


def child(args: list[str]) -> tuple[float, str]:
    """Run a child; return (peak RSS MB, stdout)."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=ROOT, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"child {args} failed with status {status}")
    return usage.ru_maxrss / 1024, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--executor", default="auto")
    parser.add_argument("--eval-clients", type=int, default=1000)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.rounds, args.executor, args.eval_clients)))
        return
    print(
        f"{'clients':>8} {'executor':>20} {'build s':>8} {'s/round':>8} {'peak MB':>8} "
        f"{'KB/client':>9} {'accuracy':>8} {'peak/4GB':>8}"
    )
    prev: tuple[int, float] | None = None
    for n in (int(c) for c in args.clients.split(",")):
        cmd = [sys.executable, __file__, "--one", str(n), "--rounds", str(args.rounds)]
        cmd += ["--executor", args.executor, "--eval-clients", str(args.eval_clients)]
        peak, out = child(cmd)
        r = json.loads(out)
        print(
            f"{n:8d} {r['executor']:>20} {r['build_s']:8.2f} {r['s_per_round']:8.2f} "
            f"{peak:8.0f} {r['kb_per_client']:9.2f} {r['accuracy']:8.4f} {peak / TARGET_MB:8.3f}"
        )
        if prev is not None:
            extra = (r["registered_mb"] - prev[1]) * 1024 / (n - prev[0])
            print(f"{'':8} marginal memory per registered client {prev[0]}->{n}: {extra:.2f} KB")
        prev = (n, r["registered_mb"])


if __name__ == "__main__":
    main()
