"""L2 clipping of client updates: the bounded sensitivity every DP mechanism here relies on.

Clipping each update to L2 norm ``C`` (McMahan et al. 2018, "Learning differentially private
recurrent language models") bounds how far one client can move the sum, so Gaussian noise
scaled to ``C`` hides any single client's contribution.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

Matrix = NDArray[np.float32]
Vector = NDArray[np.float32]

# float32 rounding can leave a rescaled row a few ulps above C; a validator that checks
# ``norm <= C`` would then reject an honest, clipped update, so rescale to just under C.
_SAFETY = 1.0 - 1e-6


def _check_clip_norm(clip_norm: float) -> None:
    if not np.isfinite(clip_norm) or clip_norm <= 0:
        raise ValueError(f"clip_norm must be a positive finite number, got {clip_norm!r}")


def row_norms(updates: Matrix) -> NDArray[np.float64]:
    """L2 norm of each row of an ``(n, d)`` matrix, accumulated in float64."""
    if updates.ndim != 2:
        raise ValueError(f"updates must be an (n, d) matrix, got shape {updates.shape}")
    sq: NDArray[np.float64] = np.einsum("ij,ij->i", updates, updates, dtype=np.float64)
    return np.sqrt(sq)


def clip_scales(norms: NDArray[np.float64], clip_norm: float) -> NDArray[np.float64]:
    """Per-row factors ``min(1, C / norm)``: exactly 1.0 for rows already within ``C``."""
    _check_clip_norm(clip_norm)
    over = norms > clip_norm
    scales = np.ones_like(norms)
    scales[over] = clip_norm / norms[over] * _SAFETY
    return scales


def clip_rows(
    updates: Matrix, clip_norm: float, *, inplace: bool = False
) -> tuple[Matrix, NDArray[np.float64]]:
    """Clip every row of ``updates`` to L2 norm at most ``clip_norm``.

    Rows already within the bound are left bit-for-bit unchanged. Returns the clipped matrix
    and the norms *before* clipping (adaptive clipping counts how many were under ``C``).
    With ``inplace=True`` the input matrix is overwritten, saving an ``(n, d)`` copy.
    """
    norms = row_norms(updates)
    scales = clip_scales(norms, clip_norm)
    out = updates if inplace else updates.copy()
    over = np.flatnonzero(scales < 1.0)
    if over.size:
        out[over] *= scales[over, None].astype(out.dtype)
    return out, norms


def clip_vector(update: Vector, clip_norm: float) -> tuple[Vector, float]:
    """Clip one flat update to L2 norm at most ``clip_norm``; returns (clipped copy, norm)."""
    if update.ndim != 1:
        raise ValueError(f"update must be a flat vector, got shape {update.shape}")
    clipped, norms = clip_rows(update[None, :], clip_norm)
    return clipped[0], float(norms[0])
