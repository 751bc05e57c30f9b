"""FedNova's step normalisation: every update rescaled to one common number of local steps.

Wang et al. 2020, "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization". A client with ``n_i`` examples takes ``tau_i = epochs * ceil(n_i / batch)``
local steps, so its delta ``Delta_i`` grows with ``tau_i``: a plain mean then optimises a
skewed objective, and a robust rule (or NNM) sees the large clients as outliers. FedNova
averages the normalised deltas ``d_i = Delta_i / tau_i`` and scales the result back:
``Delta = tau_eff * sum_i p_i d_i``, ``p_i = w_i / sum w``, ``tau_eff = sum_i p_i tau_i``
(vanilla local SGD, where the paper's ``||a_i||_1`` is ``tau_i``).

Here every row is rescaled to ``tau_eff`` steps, ``Delta_i * tau_eff / tau_i``, before the
rule: for the mean this is exactly the formula above, and for every positively homogeneous
rule (median, trimmed mean, Krum, geometric median, NNM, bucketing) it equals running the rule
on ``d_i`` and scaling back by ``tau_eff``; a rule with a fixed threshold (norm bounding,
centered clipping) keeps its threshold in the units of one round's update.

``tau_i`` is what the client says, and so is the weight ``w_i``. Under the paper's ``tau_eff``
one client claiming 2^31 steps (or examples) would multiply the round's step, so with a robust
rule each count is first clamped to ``[m / SPREAD, SPREAD * m]``, ``m`` the (unweighted) median
of the counts: while fewer than half the clients lie, ``m`` lies within the honest counts'
range, and lies about counts or weights can move ``tau_eff`` (the server's step) by at most
``SPREAD`` times either way. When every count is within that spread of the median this is
FedNova's value exactly. A liar's own row only shrinks (a large claim) or grows (a small one),
where the robust rule judges it anyway. The plain median of the counts would be as safe but
shrinks the step of every round under quantity skew (on W1 the median is 5 steps, FedNova's
value 7.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import Matrix, Vector

LOCAL_STEPS = "local_steps"
"""The training metric a client reports its step count ``tau_i`` under."""
MAX_LOCAL_STEPS = 2**31 - 1
"""The largest step count an update may claim (as ``num_examples``)."""
SPREAD = 2.0
"""With a robust rule, counts are clamped to within this factor of their median."""


def effective_steps(steps: Sequence[int], weights: Vector, robust: bool) -> float:
    """``tau_eff = sum_i p_i tau_i`` (FedNova); if ``robust``, each ``tau_i`` clamped first.

    The clamp keeps each count within ``SPREAD`` times the counts' median (module docstring).

    With all weights zero the shares are equal (as ``murmura.aggregate.preaggregation.shares``).
    """
    tau = np.asarray(steps, dtype=np.float64)
    if tau.size == 0:
        raise ValueError("no step counts")
    if robust:
        m = float(np.median(tau))
        tau = np.clip(tau, m / SPREAD, SPREAD * m)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    p = w / total if total > 0 else np.full(tau.size, 1.0 / tau.size)
    return float(p @ tau)


def step_scales(steps: Sequence[int], tau_eff: float) -> NDArray[np.float64]:
    """``tau_eff / tau_i`` per row: what brings each row to ``tau_eff`` steps."""
    tau = np.asarray(steps, dtype=np.float64)
    if (tau <= 0).any():
        raise ValueError(f"step counts must be positive, got {tau.min():g}")
    out: NDArray[np.float64] = tau_eff / tau
    return out


def normalise_steps(
    rows: Matrix, steps: Sequence[int], weights: Vector, robust: bool
) -> tuple[Matrix, float]:
    """The rows rescaled to ``tau_eff`` steps each, and ``tau_eff``.

    Equal counts return the rows unchanged (the same array): the rule then gives exactly the
    un-normalised result, with no rounding from dividing and multiplying back.
    """
    tau_eff = effective_steps(steps, weights, robust)
    if len(set(int(t) for t in steps)) == 1:
        return rows, tau_eff
    scales = step_scales(steps, tau_eff).astype(np.float32)
    return np.asarray(rows, dtype=np.float32) * scales[:, None], tau_eff
