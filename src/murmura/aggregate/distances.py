"""Distances between client updates from Gram matrices, and the BLAS products they rest on.

Squared distances use ``||a||^2 + ||b||^2 - 2 a.b``: one matrix product over the ``(n, d)``
matrix instead of ``n^2`` passes. Products run in float32 on column blocks and the partial
results add up in float64, so the rounding error is that of one block, not of all ``d``
columns. The identity loses precision when two updates are far closer to each other than to
the origin (relative error about 1e-7 of their squared norms); results are clamped at zero.

BLAS runs on one thread here. On the shared 2-core machines, OpenBLAS's threads spin against
each other under load: measured with a load average of 10, ``X @ X.T`` on 100 x 200,000 took
0.08 s on one thread and 0.46-0.82 s on two; on an idle machine one thread is as fast.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

from murmura.aggregate.base import Matrix, Vector

GRAM_BLOCK = 65_536
"""Columns per float32 product; large enough for BLAS to run at full speed."""

Float64 = NDArray[np.float64]

_BLAS = ThreadpoolController()


def one_blas_thread() -> AbstractContextManager[object]:
    """Return a context in which BLAS calls use a single thread (see the module docstring)."""
    limit: AbstractContextManager[object] = _BLAS.limit(limits=1, user_api="blas")
    return limit


def combine(coef: Float64, updates: Matrix) -> Vector:
    """Return ``sum_i coef_i x_i`` as float32: one BLAS pass, no gathered copy of the rows."""
    with one_blas_thread():
        return np.asarray(coef.astype(np.float32) @ updates, dtype=np.float32)


def gram(updates: Matrix) -> Float64:
    """Return the symmetric ``(n, n)`` matrix ``X @ X.T`` in float64."""
    x = np.asarray(updates, dtype=np.float32)
    n, d = x.shape
    g = np.zeros((n, n))
    with one_blas_thread():
        for start in range(0, d, GRAM_BLOCK):
            block = x[:, start : start + GRAM_BLOCK]
            g += block @ block.T
    # BLAS may round the two triangles differently; one symmetric matrix keeps i/j interchangeable.
    out: Float64 = 0.5 * (g + g.T)
    return out


def squared_distances(g: Float64) -> Float64:
    """Return the ``(n, n)`` pairwise squared distances of the rows whose Gram matrix is ``g``."""
    sq = np.diag(g)
    d2: Float64 = sq[:, None] + sq[None, :] - 2.0 * g
    np.maximum(d2, 0.0, out=d2)
    np.fill_diagonal(d2, 0.0)
    return d2


def pairwise_squared_distances(updates: Matrix) -> Float64:
    """Return ``D[i, j] = ||x_i - x_j||^2`` for the rows of ``updates``, in float64."""
    return squared_distances(gram(updates))


def row_squared_norms(updates: Matrix) -> Float64:
    """Return ``||x_i||^2`` for each row, accumulated in float64 over column blocks."""
    x = np.asarray(updates, dtype=np.float32)
    n, d = x.shape
    sq = np.zeros(n)
    for start in range(0, d, GRAM_BLOCK):
        block = x[:, start : start + GRAM_BLOCK]
        sq += np.einsum("ij,ij->i", block, block)
    return sq


def distances_to(updates: Matrix, sq_norms: Float64, point: NDArray[np.float32]) -> Float64:
    """Return ``||x_i - point||`` for each row, given the rows' squared norms; one pass."""
    p = np.asarray(point, dtype=np.float32)
    with one_blas_thread():
        dots = np.asarray(updates @ p, dtype=np.float64)
    p_sq = float(np.dot(p.astype(np.float64), p.astype(np.float64)))
    d2 = np.maximum(sq_norms - 2.0 * dots + p_sq, 0.0)
    out: Float64 = np.sqrt(d2)
    return out
