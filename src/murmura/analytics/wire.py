"""A site's summary as the float64 numbers a statistics result carries, and their checks.

Layout: ``[d, n, S1 (d), M2 (d), hist (d * bins), labels (classes), min (d), max (d)]``, the
last two only when the query asks for min/max. Only these sums, counts and histograms leave a
site. The coordinator trusts a site with its own numbers, as it does with its update, but
refuses an answer that is not even shaped like one: wrong length, non-finite sums, negative
or fractional counts, histograms that do not add up to the count, min above max.
"""

from __future__ import annotations

import numpy as np

from murmura.analytics.query import MAX_CELLS, StatsQuery
from murmura.analytics.summary import F64, Summary


def encode(s: Summary) -> F64:
    """The numbers of a summary, flat (see the module docstring)."""
    parts = [np.array([s.features, s.count]), s.total, s.m2, s.hist.ravel(), s.labels]
    if s.minimum is not None and s.maximum is not None:
        parts += [s.minimum, s.maximum]
    return np.concatenate(parts).astype(np.float64)


def length(query: StatsQuery, features: int) -> int:
    """How many numbers a site's answer to ``query`` has for ``features`` features."""
    per_feature = 2 + query.bins + (2 if query.minmax else 0)
    return 2 + features * per_feature + query.classes


def decode(v: F64, query: StatsQuery) -> Summary:
    """The summary in ``v``; ``ValueError`` naming what is wrong with it."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.size < 2 or v.size > MAX_CELLS + 2:
        raise ValueError(f"a statistics answer of {v.size} numbers")
    d = int(v[0]) if np.isfinite(v[0]) and v[0] == int(v[0]) and v[0] >= 0 else -1
    if d < 0 or v.size != length(query, d):
        raise ValueError(f"{v.size} numbers do not answer the query for {v[0]} features")
    query.bounds(d)  # the query's ranges fit d features
    n, bins = float(v[1]), query.bins
    end = 2 + d * (2 + bins)
    total, m2 = v[2 : 2 + d], v[2 + d : 2 + 2 * d]
    hist = v[2 + 2 * d : end].reshape(d, bins)
    labels = v[end : end + query.classes]
    _check_counts(n, hist, labels, d)
    if not (np.isfinite(total).all() and np.isfinite(m2).all() and (m2 >= 0).all()):
        raise ValueError("sums are not finite, or a sum of squares is negative")
    if not query.minmax:
        return Summary(n, total, m2, hist, labels)
    lo, hi = v[end + query.classes : end + query.classes + d], v[end + query.classes + d :]
    if n > 0 and not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo <= hi).all()):
        raise ValueError("min/max are not finite or min is above max")
    return Summary(n, total, m2, hist, labels, lo, hi)


def _check_counts(n: float, hist: F64, labels: F64, d: int) -> None:
    counts = np.concatenate([[n], hist.ravel(), labels])
    if not np.isfinite(counts).all() or (counts < 0).any() or (counts != np.round(counts)).any():
        raise ValueError("counts must be non-negative integers")
    if d and (hist.sum(axis=1) != n).any():
        raise ValueError(f"a histogram does not add up to the {n:g} rows")
    if labels.size and labels.sum() != n:
        raise ValueError(f"the label histogram does not add up to the {n:g} rows")
