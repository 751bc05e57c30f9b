"""Benchmark one SecAgg+ round against a plain FedAvg round of the same size.

Usage: .venv/bin/python benchmarks/bench_secagg.py [--clients 100] [--dims 100000 1000000]
       [--dropout 0.1] [--stage MASKED_INPUT] [--seed 0]

Dropouts default to stage MASKED_INPUT (clients share their keys, then send no input), the
costliest case for the server: it must rebuild the dropped clients' mask keys and regenerate
every pairwise mask they had with survivors. Client seconds are averaged over the surviving
clients (all four stages, including encoding their messages); server seconds include
routing, decoding, summing and unmasking. The plain FedAvg round is a float32 weighted mean
of the same (n, d) matrix, each client sending its raw float32 update (4 d bytes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from murmura.privacy.secagg import (
    Stage,
    default_neighbours,
    default_threshold,
    run_secagg_round,
)


def plain_fedavg(updates: np.ndarray, weights: np.ndarray) -> tuple[float, float, int]:
    """Seconds per client to serialise its update, server seconds, bytes per client."""
    start = time.perf_counter()
    wires = [row.tobytes() for row in updates]
    client_s = (time.perf_counter() - start) / len(updates)
    start = time.perf_counter()
    total = np.zeros(updates.shape[1], dtype=np.float32)
    for w, wire in zip(weights, wires, strict=True):
        total += np.float32(w) * np.frombuffer(wire, dtype=np.float32)
    _ = total / np.float32(weights.sum())
    server_s = time.perf_counter() - start
    return client_s, server_s, len(wires[0])


def bench(n: int, d: int, dropout: float, stage: Stage, seed: int) -> None:
    rng = np.random.default_rng(seed)
    updates = rng.normal(0.0, 0.1, size=(n, d)).astype(np.float32)
    weights = rng.integers(10, 1000, size=n).astype(np.float64)
    dropped = {int(u) for u in rng.choice(n, size=int(round(dropout * n)), replace=False)}
    k = default_neighbours(n)
    t = default_threshold(k)
    start = time.perf_counter()
    result = run_secagg_round(updates, weights, threshold=t, neighbours=k,
                              dropouts={stage: dropped}, seed=seed)
    wall = time.perf_counter() - start
    survivors = list(result.survivors)
    exact = weights[survivors] @ np.clip(updates[survivors].astype(np.float64), -1, 1)
    err = float(np.max(np.abs(result.weighted_sum - exact)))
    # Survivors ran every stage; averaging over them gives the cost of a full round.
    client_s = float(np.mean([result.client_seconds[u] for u in survivors]))
    sent = float(np.mean([result.bytes_sent[u] for u in survivors]))
    p_client, p_server, p_bytes = plain_fedavg(updates, weights)
    print(f"n={n} d={d:,} k={k} t={t} dropouts={len(dropped)} at {stage.name}"
          f" survivors={len(survivors)} wall={wall:.1f}s max|err|={err:.2e}")
    print(f"  secagg : client {client_s:.3f} s/client   server {result.server_seconds:.2f} s"
          f"   bytes/client {sent:,.0f}")
    print(f"  fedavg : client {p_client:.5f} s/client   server {p_server:.3f} s"
          f"   bytes/client {p_bytes:,}")
    server_ratio = result.server_seconds / p_server
    print(f"  ratio  : client x{client_s / p_client:,.0f}   server x{server_ratio:,.0f}"
          f"   bytes x{sent / p_bytes:.4f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--dims", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--stage", choices=[s.name for s in Stage], default="MASKED_INPUT")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for d in args.dims:
        bench(args.clients, d, args.dropout, Stage[args.stage], args.seed)


if __name__ == "__main__":
    main()
