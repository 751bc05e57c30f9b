"""Cost of a site's statistics: ``local_summary`` against numpy's own passes over the same rows.

A site of ``--rows`` x ``--features`` float32 values (default 1,000,000 x 20) and 10 classes.
Baseline: ``x.mean(0)``, ``x.var(0)``, ``x.min(0)``, ``x.max(0)``, one ``np.histogram`` per
feature and ``np.bincount`` of the labels, in float64 as the summary computes them. Prints
the medians of ``--repeat`` interleaved runs, the ratio, the secure (bounded) form's extra
cost, and the merge of 1,000 site summaries.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from murmura.analytics.bounded import feature_scale, to_bounded
from murmura.analytics.query import StatsQuery
from murmura.analytics.summary import local_summary, merge_all


def _numpy_pass(x: np.ndarray, y: np.ndarray, q: StatsQuery) -> None:
    rows = x.astype(np.float64)
    rows.mean(axis=0), rows.var(axis=0), rows.min(axis=0), rows.max(axis=0)
    for j in range(rows.shape[1]):
        np.histogram(rows[:, j], bins=q.bins, range=(q.low[0], q.high[0]))
    np.bincount(y, minlength=q.classes)


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (a.rows, a.features)).astype(np.float32)
    y = rng.integers(0, 10, a.rows)
    q = StatsQuery((-4.0,), (4.0,), bins=10, classes=10)
    base = _median(lambda: _numpy_pass(x, y, q), a.repeat)
    ours = _median(lambda: local_summary(x, y, q), a.repeat)
    s = local_summary(x, y, q)
    bounded = _median(lambda: to_bounded(s, feature_scale(q, a.features)), a.repeat)
    sites = [local_summary(x[i * 100 : (i + 1) * 100], y[i * 100 : (i + 1) * 100], q)
             for i in range(1000)]  # fmt: skip
    merge = _median(lambda: merge_all(sites), a.repeat)
    print(f"site of {a.rows:,} x {a.features} rows, 10 bins, 10 classes")
    print(f"numpy passes (mean, var, min, max, histograms, labels): {base:.3f} s")
    print(f"local_summary:                                         {ours:.3f} s")
    print(f"ratio local_summary / numpy:                           {ours / base:.2f}")
    print(f"bounded form for SecAgg+/DP:                           {bounded * 1e6:.0f} us")
    print(f"merge of 1,000 site summaries:                         {merge * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
