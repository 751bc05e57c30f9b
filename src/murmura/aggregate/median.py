"""Coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed Learning")."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector
from murmura.aggregate.weighted_order import weighted_median
from murmura.errors import AggregationError

SORT_BLOCK = 8_192
"""Columns per transposed block. Measured on W3: 2k-8k columns keep the block in cache and sort
fastest; 32k and more are slower. Sorting rows of ~100 values uses numpy's SIMD sort, which
beats ``np.partition`` here (a multi-``kth`` partition is several times slower still)."""


def sorted_blocks(
    updates: Matrix, rows: NDArray[np.intp] | None = None
) -> Iterator[tuple[slice, Matrix]]:
    """Yield ``(columns, block)``: ``updates[rows, columns].T`` as float32, each row sorted.

    The block is a view of a reused buffer, of shape ``(columns, len(rows))``: read it before
    asking for the next one. Working on column blocks keeps memory at one block, whatever
    ``d`` is. Updates must be finite (the runtime rejects others before aggregation).
    """
    n, d = updates.shape
    left_out = None if rows is None else np.setdiff1d(np.arange(n), rows)
    buffer = np.empty((min(SORT_BLOCK, d), n), dtype=np.float32)
    for start in range(0, d, SORT_BLOCK):
        cols = slice(start, min(start + SORT_BLOCK, d))
        block = buffer[: cols.stop - cols.start]
        np.copyto(block, updates[:, cols].T, casting="same_kind")
        if left_out is not None:
            # Rows left out sort last as +inf: cheaper than gathering the chosen ones.
            block[:, left_out] = np.inf
        block.sort(axis=1)
        yield cols, block[:, : n if rows is None else len(rows)]


def middle(sorted_block: Matrix) -> Vector:
    """Return the median of each row of a row-sorted block (mean of the two middles if even)."""
    k = sorted_block.shape[1]
    if k % 2:
        return sorted_block[:, k // 2]
    out: Vector = 0.5 * (sorted_block[:, k // 2 - 1] + sorted_block[:, k // 2])
    return out


def coordinate_median(updates: Matrix, weights: Vector, weighted: bool = False) -> Vector:
    """Return the coordinate-wise median of the rows.

    ``weighted`` False: ``weights`` are ignored, as in the paper; True: the example-weighted
    median (``weighted_order.weighted_median``).
    """
    check_median(updates.shape[0])
    if weighted:
        return weighted_median(updates, weights)
    out = np.empty(updates.shape[1], dtype=np.float32)
    for cols, block in sorted_blocks(updates):
        out[cols] = middle(block)
    return out


def check_median(n: int, weighted: bool = False) -> None:
    """Raise ``AggregationError`` unless there is at least one client."""
    if n < 1:
        raise AggregationError(f"coordinate_median needs n >= 1 client; got n = {n}")


@AGGREGATORS.register("coordinate_median")
def _coordinate_median_rule(weighted: bool = False) -> Aggregator:
    check_weighted("coordinate_median", weighted)
    return Rule(
        "coordinate_median", coordinate_median, {"weighted": weighted}, precondition=check_median
    )


def check_weighted(rule: str, weighted: object) -> None:
    """Raise ``AggregationError`` unless ``weighted`` is a boolean."""
    if not isinstance(weighted, bool):
        raise AggregationError(f"{rule}: weighted = {weighted!r} must be true or false")
