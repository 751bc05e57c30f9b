"""Workload W3 "aggregate": every aggregation rule on 100 x 1,000,000 float32 updates.

Prints seconds per rule (best of 3 after one warm-up) and the ratio to one pass over the
matrix (``X.sum(axis=0)``) measured in the same run, against the targets of issue 3.

    .venv/bin/python benchmarks/bench_aggregate.py
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from murmura.aggregate import make_aggregator

N, D, SEED = 100, 1_000_000, 0
# (registered name, parameters, target ratio to one pass or None when the issue sets none)
RULES: list[tuple[str, dict[str, Any], float | None]] = [
    ("weighted_mean", {}, 1.5),
    ("coordinate_median", {}, 25.0),
    ("trimmed_mean", {"beta": 0.1}, 25.0),
    ("krum", {"f": 10}, 12.0),
    ("multi_krum", {"f": 10}, 12.0),
    ("bulyan", {"f": 10}, 40.0),
    ("geometric_median", {}, 30.0),
    ("centered_clipping", {"tau": 100.0, "iters": 3}, None),
    ("norm_bounding", {"bound": 100.0}, None),
]


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Seconds of the fastest of ``repeats`` calls, after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    x = np.random.default_rng(SEED).standard_normal((N, D), dtype=np.float32)
    w = np.ones(N, dtype=np.float32)
    one_pass = best_of(lambda: x.sum(axis=0))
    print(f"W3: {N} x {D:,} float32 ({x.nbytes / 1e6:.0f} MB), seed {SEED}")
    print(f"one pass X.sum(axis=0): {one_pass:.4f} s\n")
    print(f"{'rule':<20} {'seconds':>8} {'ratio':>7} {'target':>7}  meets")
    for name, params, target in RULES:
        rule = make_aggregator(name, **params)
        seconds = best_of(partial(rule, x, w))
        ratio = seconds / one_pass
        shown = "-" if target is None else f"{target:.1f}x"
        meets = "-" if target is None else ("yes" if ratio <= target else "NO")
        print(f"{name:<20} {seconds:>8.4f} {ratio:>6.1f}x {shown:>7}  {meets}")


if __name__ == "__main__":
    main()
