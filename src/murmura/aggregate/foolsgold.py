"""FoolsGold: down-weights clients whose update histories are alike (likely sybils).

Fung, Yoon & Beschastnikh 2020, "The Limitations of Federated Learning in Sybil Settings":
sybils that push one poisoned objective send similar updates round after round,
honest clients with their own data do not; so each client's credibility falls with the
cosine similarity of its *history* (the sum of its updates so far) to the others'.

``foolsgold_credibility`` is the paper's Algorithm 1 (similarity, pardoning, logit with
confidence ``kappa``); ``FoolsGold`` keeps the histories by node id, so a strategy checkpoints
them with the model. The paper's optional feature-importance weighting is not applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Vector
from murmura.aggregate.clipping import check_positive
from murmura.aggregate.distances import combine
from murmura.aggregate.flame import cosine_distances

F64 = NDArray[np.float64]
KIND = "foolsgold"


def foolsgold_credibility(history: Matrix | F64, kappa: float = 1.0) -> F64:
    """Each client's weight in [0, 1] from the cosine similarities of the histories' rows.

    ``v_i = max_j cs_ij``; pardoning ``cs_ij *= v_i / v_j`` when ``v_j > v_i``; then
    ``a_i = 1 - max_j cs_ij``, scaled so the largest is 1 (capped at 0.99) and mapped by
    ``kappa (ln(a / (1 - a)) + 0.5)`` clipped to [0, 1].
    """
    n = history.shape[0]
    if n < 2:
        return np.ones(n)
    cs = 1.0 - cosine_distances(np.asarray(history, dtype=np.float32))
    np.fill_diagonal(cs, 0.0)  # the reference code's ``cs - I``: a row is not its own sybil
    v = cs.max(axis=1)
    pardon = np.where(v[:, None] < v[None, :], v[:, None] / np.where(v > 0, v, 1.0)[None, :], 1.0)
    alpha = np.clip(1.0 - (cs * pardon).max(axis=1), 0.0, 1.0)
    if alpha.max() <= 0:
        return np.zeros(n)
    alpha = alpha / alpha.max()
    alpha[alpha == 1.0] = 0.99
    with np.errstate(divide="ignore"):
        logit = kappa * (np.log(alpha / (1.0 - alpha)) + 0.5)
    out: F64 = np.clip(np.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return out


class FoolsGold:
    """The weighted mean with each client's weight times its FoolsGold credibility.

    Histories are kept per node id across rounds (``aggregate_clients``). Called without ids
    (``__call__``), it scores one round's rows alone, with no history.
    """

    name = "foolsgold"
    linear = False

    def __init__(self, kappa: float = 1.0) -> None:
        check_positive("foolsgold", "kappa", kappa)
        self.kappa = kappa
        self.params: Mapping[str, Any] = {"kappa": kappa}
        self.history: dict[str, NDArray[np.float32]] = {}

    def __call__(self, updates: Matrix, weights: Vector) -> Vector:
        """One round's FoolsGold, the rows' own similarities standing for their histories."""
        return self.combine(foolsgold_credibility(updates, self.kappa), updates, weights)

    def aggregate_clients(self, nodes: Sequence[str], updates: Matrix, weights: Vector) -> Vector:
        """Add each row to its node's history, then weight the rows by the histories' scores."""
        for node, row in zip(nodes, updates, strict=True):
            old = self.history.get(node)
            row32 = np.asarray(row, dtype=np.float32)
            self.history[node] = row32.copy() if old is None else old + row32
        stacked = np.stack([self.history[node] for node in nodes])
        return self.combine(foolsgold_credibility(stacked, self.kappa), updates, weights)

    @staticmethod
    def combine(alpha: F64, updates: Matrix, weights: Vector) -> Vector:
        """``sum_i a_i w_i x_i / sum_i a_i w_i``; all zero (every row a sybil): no update."""
        coef = alpha * np.asarray(weights, dtype=np.float64)
        total = coef.sum()
        if total <= 0:
            return np.zeros(updates.shape[1], dtype=np.float32)
        return combine(coef / total, updates)

    def check(self, n: int) -> None:
        """Any number of clients works."""

    def state_dict(self) -> dict[str, object]:
        """The histories, as node ids and one ``(k, d)`` matrix."""
        nodes = sorted(self.history)
        rows = np.stack([self.history[n] for n in nodes]) if nodes else np.zeros((0, 0))
        return {"kind": KIND, "nodes": nodes, "history": rows}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore histories saved by ``state_dict``; a state of another kind is refused."""
        if state.get("kind") != KIND:
            raise ValueError(f"not a FoolsGold state (kind {state.get('kind')!r})")
        nodes, rows = list(state["nodes"]), np.asarray(state["history"], dtype=np.float32)
        if len(nodes) != len(rows):
            raise ValueError(f"{len(nodes)} node ids for {len(rows)} histories")
        self.history = {str(n): rows[i].copy() for i, n in enumerate(nodes)}


@AGGREGATORS.register("foolsgold")
def _foolsgold_rule(kappa: float = 1.0) -> Aggregator:
    return FoolsGold(kappa)
