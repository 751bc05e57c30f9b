"""Adaptive, aggregator-aware omniscient attacks: each forges its update from the honest ones.

- ``min_max``, ``min_sum``: Shejwalkar and Houmansadr 2021 ("Manipulating the Byzantine",
  NDSS): ``mean - gamma * p`` with the largest ``gamma`` (their binary search) whose distances
  to the honest updates stay within the honest ones' (max distance; sum of squares). ``p`` is
  one of their three perturbations (inverse unit vector, the default; inverse sign; inverse
  std), or ``"strongest"``: each round, the one of the three that moves the rule in use
  furthest from its output on the honest updates (their AGR-tailored objective). The paper
  tries all three and reports the strongest over a whole run; on W1 a greedy per-round
  choice is weaker than a fixed perturbation, so the grid runs each one as its own row;
- ``fang_trimmed_mean``, ``fang_krum``: Fang et al. 2020 ("Local Model Poisoning Attacks to
  Byzantine-Robust Federated Learning", USENIX Security), full-knowledge attacks on trimmed
  mean (and median) and on Krum;
- ``mimic``: Karimireddy, He and Jaggi 2022 ("Byzantine-Robust Learning on Heterogeneous
  Datasets via Bucketing", ICLR): every attacker copies one honest worker, the one that lies
  furthest along the honest updates' top principal direction over a warm-up, and keeps
  copying that same worker (a consistent bias towards its data);
- ``alie_opt``, ``ipm_opt``: ALIE and IPM with their scale chosen by line search against
  the rule in use, maximising the distance of its output from the honest mean (the
  "optimised" variants of Allouah et al. 2023, "Fixing by Mixing").

The math is pure functions on an ``(n, d)`` array of honest updates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from murmura.aggregate import krum_select
from murmura.aggregate.preaggregation import make_rule
from murmura.attacks.base import ATTACKS, AttackContext, RoundView
from murmura.attacks.omniscient import alie_update, ipm_update
from murmura.errors import ConfigError
from murmura.seeding import derive_seed
from murmura.types import Vector

Deviation = Literal["unit_vec", "sign", "std"]
DEVIATIONS: tuple[Deviation, ...] = ("unit_vec", "sign", "std")
SCALES = tuple(float(s) for s in np.geomspace(0.05, 50.0, 28))
"""The line search's candidate scales (ALIE's ``z``, IPM's ``epsilon``), log-spaced."""


def deviation(honest: np.ndarray, kind: Deviation) -> np.ndarray:
    """Shejwalkar and Houmansadr's perturbation ``p``: unit mean, sign of the mean, or std."""
    mu: np.ndarray = honest.mean(axis=0, dtype=np.float64)
    out: np.ndarray
    if kind == "unit_vec":
        norm = float(np.linalg.norm(mu))
        out = mu / norm if norm > 0 else mu
    elif kind == "sign":
        out = np.sign(mu)
    elif kind == "std":
        out = honest.std(axis=0, dtype=np.float64)
    else:
        raise ConfigError(f"deviation = {kind!r}; valid: unit_vec, sign, std")
    return out


def largest_scale(ok: Callable[[float], bool], init: float = 10.0, tol: float = 1e-5) -> float:
    """The largest ``gamma`` for which ``ok(gamma)``, by Shejwalkar and Houmansadr's search.

    Their Algorithm 1: step up by half the last step while ``ok``, down otherwise, halving the
    step each time; 0 when no tried value passes.
    """
    gamma, step, best = init, init / 2, 0.0
    while abs(best - gamma) > tol and step > tol / 4:
        if ok(gamma):
            best, gamma = gamma, gamma + step
        else:
            gamma = gamma - step
        step /= 2
    return best


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b`` (float64)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d2 = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2 * a64 @ b64.T
    out: np.ndarray = np.maximum(d2, 0.0)
    return out


def _scaled_search(
    honest: np.ndarray, kind: Deviation, fits: Callable[[np.ndarray, np.ndarray], bool]
) -> Vector:
    """``mean - gamma p`` for the largest ``gamma`` whose distances to the honest rows ``fits``."""
    h = honest.astype(np.float64)
    mu, p = h.mean(axis=0), deviation(honest, kind)
    pairwise = _sq_dists(h, h)
    h_sq = (h**2).sum(axis=1)

    def ok(gamma: float) -> bool:
        m = mu - gamma * p
        return fits(np.maximum(h_sq + m @ m - 2 * h @ m, 0.0), pairwise)

    out: Vector = (mu - largest_scale(ok) * p).astype(np.float32)
    return out


def min_max_update(honest: np.ndarray, kind: Deviation = "unit_vec") -> Vector:
    """``mean - gamma p`` with ``max_i ||m - g_i|| <= max_ij ||g_i - g_j||`` (min-max)."""
    return _scaled_search(honest, kind, lambda d2, pairwise: d2.max() <= pairwise.max())


def min_sum_update(honest: np.ndarray, kind: Deviation = "unit_vec") -> Vector:
    """``mean - gamma p`` with ``sum_i ||m - g_i||^2 <= max_i sum_j ||g_i - g_j||^2`` (min-sum)."""
    return _scaled_search(honest, kind, lambda d2, pairwise: d2.sum() <= pairwise.sum(axis=1).max())


def fang_trimmed_mean_update(
    honest: np.ndarray, rng: np.random.Generator, b: float = 2.0
) -> Vector:
    """Fang et al.'s full-knowledge attack on trimmed mean and median, per coordinate.

    Where the honest mean goes up (``s_j > 0``) send a value in ``[w_min / b, w_min]``
    (``[b w_min, w_min]`` if ``w_min <= 0``); where it goes down, one in ``[w_max, b w_max]``
    (``[w_max / b, w_max]`` if ``w_max <= 0``): just past the honest extreme against ``s``.
    """
    s = np.sign(honest.mean(axis=0, dtype=np.float64))
    lo, hi = honest.min(axis=0).astype(np.float64), honest.max(axis=0).astype(np.float64)
    down = np.where(lo > 0, (lo / b, lo), (lo * b, lo))
    up = np.where(hi > 0, (hi, hi * b), (hi / b, hi))
    u = rng.random(honest.shape[1])
    low, high = np.where(s > 0, down, up)
    out: Vector = np.where(s == 0, 0.0, low + u * (high - low)).astype(np.float32)
    return out


def fang_krum_update(honest: np.ndarray, num_byzantine: int, f: int, tol: float = 1e-5) -> Vector:
    """Fang et al.'s full-knowledge attack on Krum: ``-lambda s`` that Krum selects.

    ``s`` is the sign of the honest mean; ``lambda`` starts at Fang et al.'s upper bound and
    halves until Krum (with ``f``) picks one of the ``num_byzantine`` identical copies.
    """
    n_h, d = honest.shape
    c, m = num_byzantine, n_h + num_byzantine
    s = np.sign(honest.mean(axis=0, dtype=np.float64))
    dist = np.sqrt(_sq_dists(honest, honest))
    k = max(min(m - c - 2, n_h - 1), 1)
    nearest = np.sort(dist, axis=1)[:, 1 : k + 1].sum(axis=1)
    spread = float(nearest.min()) / (max(m - 2 * c - 1, 1) * d)
    lam = spread + float(np.linalg.norm(honest, axis=1).max()) / np.sqrt(d)
    while lam > tol:
        crafted: Vector = (-lam * s).astype(np.float32)
        rows = np.vstack([honest, np.repeat(crafted[None, :], c, axis=0)]).astype(np.float32)
        if int(krum_select(rows, f)[0]) >= n_h:
            return crafted
        lam /= 2
    out: Vector = (-lam * s).astype(np.float32)
    return out


def mimic_target(honest: np.ndarray) -> int:
    """The row of ``honest`` furthest along the honest updates' top principal direction."""
    centred = honest.astype(np.float64) - honest.mean(axis=0, dtype=np.float64)
    if not np.any(centred):
        return 0
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return int(np.argmax(np.abs(centred @ vt[0])))


def mimic_update(honest: np.ndarray) -> Vector:
    """The honest update furthest along the honest updates' top principal direction."""
    out: Vector = honest[mimic_target(honest)].astype(np.float32)
    return out


def rule_weights(honest: np.ndarray, num_byzantine: int, weights: np.ndarray | None) -> Vector:
    """The weights the rule gives the honest rows and the attackers' copies (None: equal)."""
    n = len(honest) + num_byzantine
    if weights is None or len(weights) != n:
        return np.ones(n, dtype=np.float32)
    out: Vector = np.asarray(weights, dtype=np.float32)
    return out


def line_search(
    honest: np.ndarray,
    num_byzantine: int,
    craft: Callable[[float], Vector],
    rule: Callable[[np.ndarray, np.ndarray], Vector],
    scales: tuple[float, ...] = SCALES,
    weights: np.ndarray | None = None,
) -> Vector:
    """``craft(scale)`` for the scale that moves ``rule``'s output furthest from the honest mean.

    Every attacker sends the crafted vector; the rule weighs the rows by ``weights`` (the
    honest rows' example counts, then the attackers' claimed ones), as the rule in use does
    (geometric median weighs by examples); None: equally.
    """
    mu = honest.mean(axis=0, dtype=np.float64)
    weights = rule_weights(honest, num_byzantine, weights)
    best, best_gap = craft(scales[0]), -1.0
    for scale in scales:
        crafted = craft(scale)
        rows = np.vstack([honest, np.repeat(crafted[None, :], num_byzantine, axis=0)])
        gap = float(np.linalg.norm(np.asarray(rule(rows.astype(np.float32), weights)) - mu))
        if np.isfinite(gap) and gap > best_gap:
            best, best_gap = crafted, gap
    return best


def strongest(
    honest: np.ndarray,
    num_byzantine: int,
    candidates: list[Vector],
    rule: Callable[[np.ndarray, np.ndarray], Vector],
    weights: np.ndarray | None = None,
) -> Vector:
    """The candidate that, sent by every attacker, moves ``rule``'s output furthest.

    Shejwalkar and Houmansadr's AGR-tailored objective: the distance from what ``rule`` makes
    of the honest updates alone (not from their mean: a median already sits away from the
    mean on non-IID data, and pushing it further that way is no attack). The first one wins
    a tie (and is kept if no gap is finite). ``weights``: as in ``line_search``.
    """
    weights = rule_weights(honest, num_byzantine, weights)
    mu = np.asarray(rule(honest.astype(np.float32), weights[: len(honest)]))
    best, best_gap = candidates[0], -1.0
    for crafted in candidates:
        rows = np.vstack([honest, np.repeat(crafted[None, :], num_byzantine, axis=0)])
        gap = float(np.linalg.norm(np.asarray(rule(rows.astype(np.float32), weights)) - mu))
        if np.isfinite(gap) and gap > best_gap:
            best, best_gap = crafted, gap
    return best


@dataclass(frozen=True, slots=True)
class RuleInUse:
    """The rule an adaptive attack searches against (as ``AttackContext`` names it)."""

    aggregator: str
    aggregator_args: tuple[tuple[str, Any], ...] = ()
    """The rule's parameters as sorted items (hashable: rounds share one forged update)."""
    pre_aggregation: str = "none"
    pre_aggregation_args: tuple[tuple[str, Any], ...] = ()
    """The pre-aggregation before the rule (NNM, bucketing, ARC), searched against too."""

    def build(self) -> Callable[[np.ndarray, np.ndarray], Vector]:
        """The rule, behind its pre-aggregation."""
        return make_rule(
            self.aggregator,
            dict(self.aggregator_args),
            self.pre_aggregation,
            dict(self.pre_aggregation_args),
        )


def rule_in_use(ctx: AttackContext) -> RuleInUse:
    """The whole rule of ``ctx``, pre-aggregation included."""
    return RuleInUse(
        ctx.aggregator,
        tuple(sorted(ctx.aggregator_args.items())),
        ctx.pre_aggregation,
        tuple(sorted(ctx.pre_aggregation_args.items())),
    )


@dataclass(frozen=True, slots=True)
class ShejwalkarHoumansadr:
    """Min-max (``sum_squares = False``) or min-sum (True).

    ``kind`` a perturbation: that one; ``"strongest"``: each round, the one of the three that
    moves ``rule`` furthest from its output on the honest updates (``strongest``).
    """

    sum_squares: bool
    kind: Deviation | Literal["strongest"] = "unit_vec"
    rule: RuleInUse = RuleInUse("weighted_mean")

    def forge(self, view: RoundView) -> Vector:
        """The min-max or min-sum update."""
        attack = min_sum_update if self.sum_squares else min_max_update
        if self.kind != "strongest":
            return attack(view.honest, self.kind)
        candidates = [attack(view.honest, k) for k in DEVIATIONS]
        n_byz = max(view.num_byzantine, 1)
        return strongest(view.honest, n_byz, candidates, self.rule.build(), view.weights)


@dataclass(frozen=True, slots=True)
class FangTrimmedMean:
    """Fang et al.'s trimmed-mean attack, each attacker drawing its own values (seeded)."""

    seed: int
    attacker: int
    b: float = 2.0

    def forge(self, view: RoundView) -> Vector:
        """The per-coordinate values just past the honest extremes."""
        rng = np.random.default_rng(derive_seed(self.seed, view.round, self.attacker, 0xFA9))
        return fang_trimmed_mean_update(view.honest, rng, self.b)


@dataclass(frozen=True, slots=True)
class FangKrum:
    """Fang et al.'s Krum attack against Krum with ``f``."""

    f: int

    def forge(self, view: RoundView) -> Vector:
        """The largest ``-lambda s`` that Krum selects."""
        return fang_krum_update(view.honest, max(view.num_byzantine, 1), self.f)


class Mimic:
    """Karimireddy et al.'s mimic: copy one honest worker, the same one every round.

    For the first ``warmup`` rounds it takes part in, the attacker copies the round's most
    outlying honest worker (``mimic_target``); from then on it copies the last one so chosen,
    by node id, as the paper's attack does after its warm-up ("mimic a fixed honest worker",
    their Appendix; a bias that adds up over rounds instead of averaging out). A round
    without that worker, or without node ids, falls back to the round's most outlying one.
    Each attacker keeps its own choice; attackers that took part in the same rounds agree.
    """

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.seen = 0
        self.target: str | None = None

    def forge(self, view: RoundView) -> Vector:
        """The target worker's update (the round's most outlying one in the warm-up)."""
        honest, nodes = view.honest, view.nodes
        if self.seen >= self.warmup and self.target in nodes:
            row = nodes.index(self.target)
        else:
            row = mimic_target(honest)
            if self.seen < self.warmup and len(nodes) == len(honest):
                self.target = nodes[row]
        self.seen += 1
        out: Vector = honest[row].astype(np.float32)
        return out


@dataclass(frozen=True, slots=True)
class Optimised:
    """ALIE or IPM with the scale that hurts ``aggregator`` most (line search)."""

    attack: Literal["alie", "ipm"]
    rule: RuleInUse

    def forge(self, view: RoundView) -> Vector:
        """The crafted update at the most damaging scale."""
        rule = self.rule.build()
        honest = view.honest
        craft: Callable[[float], Vector] = (
            (lambda z: alie_update(honest, z))
            if self.attack == "alie"
            else (lambda eps: ipm_update(honest, eps))
        )
        return line_search(honest, max(view.num_byzantine, 1), craft, rule, weights=view.weights)


def _krum_f(ctx: AttackContext) -> int:
    """The ``f`` of the Krum-family rule in use, else the expected attackers per round."""
    f = ctx.aggregator_args.get("f")
    if f is not None:
        return int(f)
    return max(1, round(ctx.num_attackers * ctx.cohort_size / max(ctx.num_clients, 1)))


@ATTACKS.register("min_max")
def _min_max(ctx: AttackContext, deviation: str = "unit_vec") -> ShejwalkarHoumansadr:
    return ShejwalkarHoumansadr(False, _check_deviation(deviation), rule_in_use(ctx))


@ATTACKS.register("min_sum")
def _min_sum(ctx: AttackContext, deviation: str = "unit_vec") -> ShejwalkarHoumansadr:
    return ShejwalkarHoumansadr(True, _check_deviation(deviation), rule_in_use(ctx))


def _check_deviation(kind: str) -> Deviation | Literal["strongest"]:
    if kind == "strongest":
        return "strongest"
    for valid in DEVIATIONS:
        if kind == valid:
            return valid
    raise ConfigError(f"deviation = {kind!r}; valid: unit_vec, sign, std, strongest")


@ATTACKS.register("fang_trimmed_mean")
def _fang_tm(ctx: AttackContext, b: float = 2.0) -> FangTrimmedMean:
    if not b > 1:
        raise ConfigError(f"fang_trimmed_mean: b = {b} must be > 1")
    return FangTrimmedMean(ctx.seed, ctx.attacker, b)


@ATTACKS.register("fang_krum")
def _fang_krum(ctx: AttackContext, f: int | None = None) -> FangKrum:
    return FangKrum(_krum_f(ctx) if f is None else int(f))


@ATTACKS.register("mimic")
def _mimic(ctx: AttackContext, warmup: int = 1) -> Mimic:
    if not (isinstance(warmup, int) and warmup >= 1):
        raise ConfigError(f"mimic: warmup = {warmup!r} must be a whole number of rounds >= 1")
    return Mimic(warmup)


@ATTACKS.register("alie_opt")
def _alie_opt(ctx: AttackContext) -> Optimised:
    return _optimised("alie", ctx)


@ATTACKS.register("ipm_opt")
def _ipm_opt(ctx: AttackContext) -> Optimised:
    return _optimised("ipm", ctx)


def _optimised(attack: Literal["alie", "ipm"], ctx: AttackContext) -> Optimised:
    """ALIE or IPM searching against the whole rule of ``ctx``, pre-aggregation included."""
    return Optimised(attack, rule_in_use(ctx))
