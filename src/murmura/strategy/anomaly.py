"""Per-client anomaly scores against the round's aggregate, and flagging over rounds.

Scores (pure functions): L2 distance of each update to the aggregated delta, cosine
similarity to it, the update's norm, and, for rules that pick or trim, what the rule kept of
it (Krum/Multi-Krum/Bulyan: selected or not; trimmed mean: the fraction of coordinates not
trimmed; norm bounding and centered clipping: not clipped). Distance-based outlier scoring
in the spirit of FLTrust/FoolsGold-style defences; here it only reports and, if asked,
excludes. ``Flagging`` wraps any strategy with an ``AnomalyMonitor``, so every round loop that
runs the strategy (the simulation, the deployed coordinator) scores, flags and excludes alike,
and a checkpoint keeps the streaks.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import Aggregator, Matrix
from murmura.aggregate.buffer import UpdateBuffer
from murmura.strategy.base import Strategy, Wrapper
from murmura.types import Failure, Vector

log = logging.getLogger(__name__)
F64 = NDArray[np.float64]
ScoreKind = Literal["cosine", "l2", "l2_ratio", "norm", "norm_ratio"]


def anomaly_scores(rows: Matrix, reference: Vector) -> dict[str, F64]:
    """``l2`` (distance to ``reference``), ``cosine`` (similarity to it), ``norm`` per row."""
    x = np.asarray(rows, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    ref_norm = float(np.sqrt(ref @ ref))
    dots = x @ ref
    l2 = np.sqrt(np.maximum(norms**2 - 2 * dots + ref_norm**2, 0.0))
    denom = norms * ref_norm
    cosine = np.divide(dots, denom, out=np.zeros_like(dots), where=denom > 0)
    return {"l2": l2, "cosine": cosine, "norm": norms}


def relative(values: F64) -> F64:
    """``values`` divided by their median (1 for all when the median is 0)."""
    med = float(np.median(values)) if values.size else 0.0
    return values / med if med > 0 else np.ones_like(values)


def crossed(kind: ScoreKind, scores: Mapping[str, F64], threshold: float) -> NDArray[np.bool_]:
    """Which rows cross ``threshold``: below it for ``cosine``, above it for the others."""
    if kind == "cosine":
        return scores["cosine"] < threshold
    base = scores[kind.removesuffix("_ratio")]
    value = relative(base) if kind.endswith("_ratio") else base
    return value > threshold


def kept_by_rule(aggregator: Aggregator, rows: Matrix, result: Vector) -> F64 | None:
    """What the rule kept of each row in [0, 1], for rules that select, trim or clip."""
    params: Mapping[str, Any] = getattr(aggregator, "params", {})
    n, name = rows.shape[0], aggregator.name
    out = np.zeros(n)
    if name in ("krum", "multi_krum", "bulyan"):
        chosen = _selected(name, rows, params)
        if chosen is None:
            return None
        out[chosen] = 1.0
        return out
    if name == "trimmed_mean":
        k = int(np.floor(float(params.get("beta", 0.1)) * n + 1e-9))
        ranks = np.argsort(np.argsort(rows, axis=0, kind="stable"), axis=0, kind="stable")
        kept: F64 = ((ranks >= k) & (ranks < n - k)).mean(axis=1)
        return kept
    if name == "norm_bounding":
        norms: F64 = np.linalg.norm(rows.astype(np.float64), axis=1)
        return np.asarray(norms <= float(params.get("bound", 1.0)), dtype=np.float64)
    if name == "centered_clipping":
        dist: F64 = np.linalg.norm(rows.astype(np.float64) - result.astype(np.float64), axis=1)
        return np.asarray(dist <= float(params.get("tau", 1.0)), dtype=np.float64)
    return None


def _selected(name: str, rows: Matrix, params: Mapping[str, Any]) -> NDArray[np.intp] | None:
    """Indices Krum, Multi-Krum or Bulyan select (their own selection helpers)."""
    try:
        from murmura.aggregate.bulyan import bulyan_select
        from murmura.aggregate.krum import krum_select
    except ImportError:  # the robust rules are optional to this module
        return None
    f, n = int(params.get("f", 1)), rows.shape[0]
    if name == "bulyan":
        return bulyan_select(rows, f)
    m = params.get("m")
    count = 1 if name == "krum" else (n - f if m is None else int(m))
    return krum_select(rows, f, count)


class AnomalyMonitor:
    """Scores every participant each round; flags after ``rounds`` crossings in a row."""

    def __init__(
        self,
        score: ScoreKind = "cosine",
        threshold: float = 0.0,
        rounds: int = 3,
        exclude: bool = False,
    ) -> None:
        if rounds < 1:
            raise ValueError(f"anomaly rounds = {rounds} must be >= 1")
        self.score, self.threshold, self.rounds, self.exclude = score, threshold, rounds, exclude
        self.streaks: dict[str, int] = {}
        self.flagged: set[str] = set()

    @property
    def excluded(self) -> Collection[str]:
        """Flagged nodes when exclusion is on, else none."""
        return self.flagged if self.exclude else frozenset()

    def observe(
        self, round_: int, weights: Vector, updates: UpdateBuffer, strategy: Strategy
    ) -> dict[str, object]:
        """Score every participant of the round; return the scores and the nodes flagged so far."""
        if len(updates) == 0:
            return {"anomaly": {}, "flagged": sorted(self.flagged)}
        rows = updates.rows()
        combine = getattr(strategy, "combine", None)
        reference: Vector = combine(updates) if callable(combine) else updates.weighted_mean()
        scores = anomaly_scores(rows, reference)
        aggregator = getattr(strategy, "aggregator", None)
        kept = None if aggregator is None else kept_by_rule(aggregator, rows, reference)
        hits = crossed(self.score, scores, self.threshold)
        per_node: dict[str, dict[str, float]] = {}
        for i, node in enumerate(updates.nodes):
            entry = {k: round(float(v[i]), 6) for k, v in scores.items()}
            if kept is not None:
                entry["kept"] = round(float(kept[i]), 6)
            per_node[node] = entry
            self._count(round_, node, bool(hits[i]))
        return {"anomaly": per_node, "flagged": sorted(self.flagged)}

    def _count(self, round_: int, node: str, hit: bool) -> None:
        """Advance ``node``'s streak; flag it when the streak reaches ``rounds``."""
        self.streaks[node] = self.streaks.get(node, 0) + 1 if hit else 0
        if self.streaks[node] >= self.rounds and node not in self.flagged:
            self.flagged.add(node)
            log.warning(
                "round %d node %s: flagged, %s crossed %g in %d rounds in a row",
                round_,
                node,
                self.score,
                self.threshold,
                self.rounds,
            )

    def state_dict(self) -> dict[str, object]:
        """Streaks and flags, to resume a run."""
        return {"kind": "anomaly", "streaks": dict(self.streaks), "flagged": sorted(self.flagged)}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore streaks and flags; a state of another kind is refused."""
        if state.get("kind") != "anomaly":
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected 'anomaly'")
        streaks, flagged = state.get("streaks", {}), state.get("flagged", [])
        assert isinstance(streaks, Mapping) and isinstance(flagged, list)
        self.streaks = {str(k): int(v) for k, v in streaks.items()}
        self.flagged = {str(n) for n in flagged}


class Flagging(Wrapper):
    """``[anomaly]`` around any strategy: score each round's updates, flag, exclude if asked."""

    def __init__(self, inner: Strategy, monitor: AnomalyMonitor) -> None:
        super().__init__(inner)
        self.monitor = monitor
        self._last: dict[str, object] = {}

    @property
    def keep_rows(self) -> bool:
        """Every update is scored."""
        return True

    def linear_refusal(self) -> str | None:
        """Scores need each update, which a sum computed elsewhere hides."""
        return "anomaly scores need each client's update"

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The inner strategy's sample of the nodes not excluded."""
        excluded = self.monitor.excluded
        return self.inner.sample(round_, [n for n in nodes if n not in excluded])

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """The inner strategy's aggregate; then every participant is scored against it."""
        new = self.inner.aggregate(round_, weights, updates, failures)
        self._last = self.monitor.observe(round_, weights, updates, self.inner)
        return new

    def round_metrics(self, round_: int) -> dict[str, object]:
        """The scores of the last round and the nodes flagged so far (and the inner metrics)."""
        return {**self.inner.round_metrics(round_), **self._last}

    def state_dict(self) -> dict[str, object]:
        """Streaks and flags, with the inner strategy's state."""
        return {
            "kind": "flagging",
            "monitor": self.monitor.state_dict(),
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore streaks, flags and the inner state; a state of another kind is refused."""
        if state.get("kind") != "flagging":
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected 'flagging'")
        self.monitor.load_state_dict(state["monitor"])
        if state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])
