"""A site's sufficient statistics, and how two merge into those of the pooled rows.

Per feature a ``Summary`` keeps the count, the float64 sum, the sum of squared deviations from
the mean (M2), optionally min and max, and a fixed-bin histogram; and the label histogram. Two
summaries merge with the pairwise update of Chan, Golub and LeVeque (1979, "Updating formulae
and a pairwise algorithm for computing sample variances"), so the merge of every site's
summary has the pooled data's mean and variance (up to rounding) in any order or grouping, and
no row ever leaves its site.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from murmura.analytics.query import StatsQuery

F64 = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Summary:
    """Mergeable statistics of some rows: count, sums, M2, histograms, optional min/max."""

    count: float
    total: F64
    """(d,) sum of each feature."""
    m2: F64
    """(d,) sum of squared deviations from the mean of these rows."""
    hist: F64
    """(d, bins) rows per bin; below the range counts in the first bin, above in the last."""
    labels: F64
    """(classes,) rows per label."""
    minimum: F64 | None = None
    maximum: F64 | None = None

    @property
    def features(self) -> int:
        """Number of features d."""
        return int(self.total.shape[0])


def features_of(x: NDArray[np.floating]) -> NDArray[np.float64]:
    """Rows of ``x`` as a float64 ``(n, d)`` matrix: every axis after the first is flattened."""
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(arr.shape[0], -1) if arr.ndim != 2 else arr


def bin_index(x: F64, low: F64, high: F64, bins: int) -> NDArray[np.int64]:
    """The histogram bin of every value of ``x`` (n, d): ``bins`` equal bins over [low, high]."""
    pos = np.floor((x - low) / (high - low) * bins)
    return np.clip(pos, 0, bins - 1).astype(np.int64)


def local_summary(
    x: NDArray[np.floating], y: NDArray[np.integer] | None, query: StatsQuery
) -> Summary:
    """The summary of one site's rows ``x`` (n, ...) and labels ``y`` under ``query``.

    Raises ``ValueError`` naming the feature or the labels at fault.
    """
    rows = features_of(x)
    n, d = rows.shape
    low, high = query.bounds(d)
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=0))
    if bad.size:
        raise ValueError(f"feature {int(bad[0])} has non-finite values")
    if query.clip:
        rows = np.clip(rows, low, high)
    total = rows.sum(axis=0)
    mean = total / n if n else np.zeros(d)
    m2 = ((rows - mean) ** 2).sum(axis=0)
    idx = bin_index(rows, low, high, query.bins) + np.arange(d) * query.bins
    hist = np.bincount(idx.ravel(), minlength=d * query.bins).reshape(d, query.bins)
    minmax = (
        (rows.min(axis=0), rows.max(axis=0)) if n else (np.full(d, np.inf), -np.full(d, np.inf))
    )
    return Summary(
        float(n),
        total,
        m2,
        hist.astype(np.float64),
        label_histogram(y, query.classes, n),
        *(minmax if query.minmax else (None, None)),
    )


def label_histogram(y: NDArray[np.integer] | None, classes: int, n: int) -> F64:
    """Rows per label in ``[0, classes)``; ``classes`` 0: none asked (an empty histogram)."""
    if classes == 0:
        return np.zeros(0)
    labels = np.asarray(y if y is not None else [], dtype=np.float64).reshape(-1)
    if labels.size != n:
        raise ValueError(f"{labels.size} labels for {n} rows")
    if labels.size and (
        (labels != np.round(labels)).any() or labels.min() < 0 or labels.max() >= classes
    ):
        raise ValueError(f"labels must be integers in [0, {classes})")
    return np.bincount(labels.astype(np.int64), minlength=classes).astype(np.float64)


def merge(a: Summary, b: Summary) -> Summary:
    """The summary of the rows of ``a`` and ``b`` together (Chan et al. 1979)."""
    if a.total.shape != b.total.shape or a.hist.shape != b.hist.shape:
        raise ValueError(f"cannot merge {a.hist.shape} and {b.hist.shape} summaries")
    if a.labels.shape != b.labels.shape or (a.minimum is None) != (b.minimum is None):
        raise ValueError("cannot merge summaries of different queries")
    n = a.count + b.count
    if a.count == 0 or b.count == 0:
        m2 = a.m2 + b.m2
    else:
        delta = b.total / b.count - a.total / a.count
        m2 = a.m2 + b.m2 + delta**2 * (a.count * b.count / n)
    lo = hi = None
    if a.minimum is not None and b.minimum is not None:
        lo = np.minimum(a.minimum, b.minimum)
    if a.maximum is not None and b.maximum is not None:
        hi = np.maximum(a.maximum, b.maximum)
    return Summary(n, a.total + b.total, m2, a.hist + b.hist, a.labels + b.labels, lo, hi)


def merge_all(summaries: Iterable[Summary]) -> Summary:
    """Merge summaries left to right; ``ValueError`` if there are none."""
    it = iter(summaries)
    try:
        acc = next(it)
    except StopIteration:
        raise ValueError("no summaries to merge") from None
    for s in it:
        acc = merge(acc, s)
    return acc
