"""Where a round's validated updates land: a preallocated matrix, or a running weighted sum.

Rules that need every row (median, Krum, ...) get rows written straight into a preallocated
``(capacity, d)`` matrix, with no per-round concatenation; linear rules keep only a running
sum, O(d) however many clients report. The sum is updated and divided block by block, so
neither step makes a full-size temporary (a float64 product of a 60 MB update is 120 MB).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import Matrix, Vector
from murmura.aggregate.mean import weighted_mean
from murmura.aggregate.weights import cap_weight_share

BLOCK = 1 << 16
"""Coordinates per step of the running sum: a float64 scratch of 512 KiB, cache-sized."""


class UpdateBuffer:
    """Collects one round's updates with their example counts and metrics."""

    def __init__(
        self, capacity: int, dim: int, keep_rows: bool = True, max_weight_share: float | None = None
    ) -> None:
        # capping shares needs every count before any weighting, so rows are kept
        keep_rows = keep_rows or max_weight_share is not None
        self.dim, self.keep_rows, self.max_weight_share = dim, keep_rows, max_weight_share
        self.nodes: list[str] = []
        self.num_examples: list[int] = []
        self.metrics: list[Mapping[str, float]] = []
        self._rows = np.empty((capacity if keep_rows else 0, dim), dtype=np.float32)
        self._sum = np.zeros(0 if keep_rows else dim, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.nodes)

    def add(
        self, node: str, update: Vector, num_examples: int, metrics: Mapping[str, float]
    ) -> None:
        """Store one validated update."""
        if self.keep_rows:
            if len(self.nodes) == self._rows.shape[0]:
                raise ValueError(f"update buffer full ({self._rows.shape[0]} rows); node {node!r}")
            self._rows[len(self.nodes)] = update
        else:
            self._accumulate(np.asarray(update), np.float64(num_examples))
        self.nodes.append(node)
        self.num_examples.append(int(num_examples))
        self.metrics.append(dict(metrics))

    def _accumulate(self, update: Vector, weight: np.float64) -> None:
        """``sum += weight * update`` in float64, one block at a time (same bits as at once)."""
        scratch = np.empty(min(BLOCK, self.dim), dtype=np.float64)
        for lo in range(0, self.dim, BLOCK):
            hi = min(lo + BLOCK, self.dim)
            tmp = scratch[: hi - lo]
            np.multiply(update[lo:hi], weight, out=tmp)
            np.add(self._sum[lo:hi], tmp, out=self._sum[lo:hi])

    def rows(self) -> Matrix:
        """The stored updates as a ``(k, d)`` view (only when rows are kept)."""
        if not self.keep_rows:
            raise ValueError("this buffer keeps a running sum, not rows")
        return self._rows[: len(self.nodes)]

    def mean_metric(self, key: str) -> float | None:
        """Examples-weighted mean of a metric the clients reported, if any did."""
        pairs = [
            (m[key], n) for m, n in zip(self.metrics, self.num_examples, strict=True) if key in m
        ]
        total = sum(n for _, n in pairs)
        return None if total == 0 else float(sum(v * n for v, n in pairs) / total)

    def weights(self) -> Vector:
        """Example counts as float32 weights, one per stored update, shares capped if set."""
        return self._capped_counts().astype(np.float32)

    def _capped_counts(self) -> NDArray[np.float64]:
        counts = np.asarray(self.num_examples, dtype=np.float64)
        if self.max_weight_share is not None:
            counts = cap_weight_share(counts, self.max_weight_share)
        return counts

    def total_weight(self) -> float:
        """The sum of ``weights()``: what an edge reports as its example count to its parent.

        With a share cap, an inflated count weighs only its capped value here too, so a parent
        that weights edges by this total is not steered by one child's claim.
        """
        return float(self._capped_counts().sum())

    def weighted_mean(self) -> Vector:
        """The examples-weighted mean of the stored updates."""
        total = float(sum(self.num_examples))
        if not self.nodes or total <= 0:
            raise ValueError("no updates with a positive example count to average")
        if self.keep_rows:
            return weighted_mean(self.rows(), self.weights())
        out = np.empty(self.dim, dtype=np.float32)
        np.divide(self._sum, total, out=out, casting="same_kind")  # buffered: no float64 copy
        return out
