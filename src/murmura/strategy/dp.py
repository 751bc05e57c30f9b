"""DP-FedAvg (McMahan et al. 2018) as a wrapper around any FedAvg-family strategy.

``DifferentiallyPrivate`` replaces the inner strategy's sampling and aggregation and keeps
its server update (FedAvg's step, FedAvgM's momentum, FedAdam's moments, ...):

- **sampling**: each node takes part independently with probability ``q`` (the inner
  strategy's ``fraction``), so the Poisson accountant matches the sampling that happens;
- **aggregation**: every delta is clipped to L2 norm ``C`` and weighted by
  ``w = min(n / weight_cap, 1)`` (weight 1 without a cap; the weighted estimator of McMahan
  et al. 2018), the weighted deltas are summed, ``N(0, (z_update C)^2)`` is added and the sum
  is divided by the *expected* total weight ``q W`` (``q N`` with unit weights) given to
  ``CentralDP`` (``finalize`` is the seam where secure aggregation's unmasked sum plugs in);
  the result goes to the inner strategy's ``server_update``. ``w <= 1`` keeps the
  sensitivity ``C``;
- **adaptive clipping** (Andrew et al. 2021), optional: ``C`` follows a quantile of the update
  norms from a noised count, with the update noise raised so that the round still costs ``z``;
- **accounting**: every round is one sampled Gaussian step ``(z, q)``; ``round_metrics`` gives
  epsilon at the configured delta and ``should_stop`` is true when the next round would pass
  ``target_epsilon``.

Every round is released, even with fewer results than ``min_clients`` or none at all (pure
noise then): skipping a round on the realised count would reveal membership, which the
analysis does not cover. The round metrics (clipped fraction, clients' training loss) are
the trusted server's log, not part of the DP release. ``Accounted`` is the lighter wrapper
for local DP and DP-SGD, where the noise is added on the clients and the server only keeps
the books.

In a tree (``from_edges = True``) the edges are trusted aggregators of their clients' clipped
updates: each runs ``EdgeSum`` (the same Poisson stream over the whole population, the same
clip and weights) and reports a ``ClippedSum``; the root sums the edges' sums and releases
them exactly as above, with the noise added once. Only the root's release is DP.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.base import Matrix
from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import ConfigError, MurmuraError
from murmura.privacy.adaptive_clipping import AdaptiveClipper
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.clipping import clip_rows
from murmura.privacy.mechanisms import CentralDP
from murmura.seeding import derive_seed
from murmura.strategy.base import ClientClip, Strategy, StrategyBase, Sum, Wrapper
from murmura.types import Failure, Scalar, Vector

log = logging.getLogger(__name__)

# Independent random streams per (seed, round): who is sampled, the update noise, the
# count noise. Tags keep them apart from the streams of ``murmura.seeding.round_rng``.
_SAMPLING, _NOISE, _COUNT = 0x5A11, 0x401E, 0xC0C7
_KIND = "dp_fedavg"
_VERSION = 1
# what an edge reports with its partial sum, and how the root tells the edges this round's C
_COUNTS = ("dp_clients", "dp_clipped", "dp_under")
CLIP_KEY = "dp_clip_norm"


def check_linear(inner: Strategy, what: str) -> Strategy:
    """``inner`` if its round is the linear pipeline (weighted mean, then a server step)."""
    why = inner.linear_refusal()
    if why is not None:
        raise ConfigError(f"{what} needs a weighted mean then a server step: {why}")
    return inner


def _rng(seed: int, round_: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, round_, stream))


def poisson_sample(seed: int, round_: int, nodes: Sequence[str], rate: float) -> list[str]:
    """Each node independently with probability ``rate``, seeded by (seed, round)."""
    keep = _rng(seed, round_, _SAMPLING).random(len(nodes)) < rate
    return [n for n, k in zip(nodes, keep, strict=True) if k]


def poisson_members(
    seed: int, round_: int, population: Sequence[str | None], rate: float
) -> set[str]:
    """``poisson_sample`` over ``population``'s positions: the named ones drawn (None: not here)."""
    keep = _rng(seed, round_, _SAMPLING).random(len(population)) < rate
    return {n for n, k in zip(population, keep, strict=True) if k and n is not None}


def client_weights(num_examples: Vector, weight_cap: float | None) -> NDArray[np.float64]:
    """Per-client weights ``min(n / weight_cap, 1)``, or all 1 without a cap."""
    n = np.asarray(num_examples, dtype=np.float64)
    return np.ones_like(n) if weight_cap is None else np.minimum(n / weight_cap, 1.0)


@dataclass(frozen=True, slots=True)
class ClippedSum:
    """A weighted sum of clipped updates, with the counts the release and the log need."""

    total: Vector
    clients: int
    clipped: int  # norms above C
    under: int  # norms at most C: adaptive clipping's count

    @classmethod
    def of(cls, rows: Matrix, num_examples: Vector, clip: float, cap: float | None) -> ClippedSum:
        """Clip ``rows`` to ``clip``, weight them by ``client_weights`` and sum in float64."""
        clipped, norms = clip_rows(rows, clip)
        total = client_weights(num_examples, cap) @ clipped.astype(np.float64)
        over = int((norms > clip).sum())
        return cls(total.astype(np.float32), len(norms), over, len(norms) - over)

    @classmethod
    def of_partials(cls, rows: Matrix, metrics: Sequence[Mapping[str, float]]) -> ClippedSum:
        """The sum of partial sums that edges reported with ``metrics()``."""
        total = rows.sum(axis=0, dtype=np.float64).astype(np.float32)
        counts = [sum(int(m.get(k, 0)) for m in metrics) for k in _COUNTS]
        return cls(total, *counts)

    def __add__(self, other: ClippedSum) -> ClippedSum:
        """Both sums and their counts added."""
        total = (self.total.astype(np.float64) + other.total).astype(np.float32)
        return ClippedSum(
            total,
            self.clients + other.clients,
            self.clipped + other.clipped,
            self.under + other.under,
        )

    def metrics(self) -> dict[str, float]:
        """The counts as an edge reports them to its parent."""
        counts = (self.clients, self.clipped, self.under)
        return {k: float(v) for k, v in zip(_COUNTS, counts, strict=True)}


class DifferentiallyPrivate(Wrapper):
    """DP-FedAvg around any strategy whose round is the linear pipeline (McMahan et al. 2018)."""

    def __init__(
        self,
        inner: Strategy,
        mechanism: CentralDP,
        budget: PrivacyBudget,
        *,
        clipper: AdaptiveClipper | None = None,
        weight_cap: float | None = None,
        seed: int = 0,
        from_edges: bool = False,
    ) -> None:
        """``from_edges``: the nodes are a tree's trusted edges, each reporting a ``ClippedSum``."""
        super().__init__(check_linear(inner, "central DP"))
        if abs(budget.sample_rate - self.inner.fraction) > 1e-12:
            raise ConfigError(
                f"budget sample rate {budget.sample_rate} differs from the strategy's "
                f"fraction {self.inner.fraction}: the accountant must see the real sampling"
            )
        if weight_cap is not None and not weight_cap > 0:
            raise ConfigError(f"weight_cap must be > 0, got {weight_cap!r}")
        self.mechanism, self.budget, self.clipper, self.seed = mechanism, budget, clipper, seed
        self.weight_cap, self.from_edges = weight_cap, from_edges
        self._last: dict[str, object] = {}

    @property
    def keep_rows(self) -> bool:
        """Every row is clipped before it enters the sum."""
        return True

    @property
    def sample_rate(self) -> float:
        """Probability that a node takes part in a round."""
        return self.budget.sample_rate

    @property
    def min_results(self) -> int:
        """0: every round is released, whatever the count (skipping would reveal it)."""
        return 0

    def linear_refusal(self) -> str | None:
        """Adaptive clipping needs each update's norm, which a sum computed elsewhere hides."""
        if self.clipper is not None:
            return "adaptive clipping needs each update's norm; the server sees sums"
        return self.inner.linear_refusal()

    def client_clip(self) -> ClientClip:
        """Every update clipped to this round's ``C`` and weighted ``min(n / weight_cap, 1)``."""
        return ClientClip(self.clip_norm, self.weight_cap)

    @property
    def clip_norm(self) -> float:
        """The clip norm of the next round (adaptive or fixed)."""
        return self.mechanism.clip_norm if self.clipper is None else self.clipper.clip_norm

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """Poisson sampling at rate ``q`` (every edge of a tree: the edges sample the clients)."""
        if self.from_edges:
            return list(nodes)
        return poisson_sample(self.seed, round_, nodes, self.sample_rate)

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """The inner strategy's instructions, and this round's clip norm for a tree's edges."""
        config = self.inner.configure(round_, weights)
        return {**config, CLIP_KEY: self.clip_norm} if self.from_edges else config

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Clip, weight, sum, noise, divide by ``q W``; the inner strategy applies the result."""
        clip = self.clip_norm
        if self.from_edges:
            part = ClippedSum.of_partials(updates.rows(), updates.metrics)
        else:
            part = ClippedSum.of(updates.rows(), updates.weights(), clip, self.weight_cap)
        if part.clients < self.inner.min_results:
            log.info(
                "round %d: %d results < min_clients %d; released anyway (DP)",
                round_,
                part.clients,
                self.inner.min_results,
            )
        new = self.release(round_, weights, part.total, float(part.clients))
        if self.clipper is not None:
            self.clipper.update_from_count(part.under, _rng(self.seed, round_, _COUNT))
        clipped_fraction = part.clipped / part.clients if part.clients else 0.0
        self._last = {"dp_clip_norm": clip, "dp_clipped_fraction": clipped_fraction}
        log.info("round %d: DP-FedAvg with C=%.4g, epsilon %.4g", round_, clip, self.budget.epsilon)
        return new

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """Noise the clipped sum, divide by the expected weight ``q W``; the inner strategy steps.

        ``weight`` (the realised count) is not used: it is private. Spends one round of
        budget, with or without a sum (an aborted round is charged too).
        """
        try:
            if total is None:
                return self.inner.release(round_, weights, None, 0.0)
            delta = self.noised_mean(round_, np.asarray(total, dtype=np.float32))
            return self.inner.release(round_, weights, delta, 1.0)
        finally:
            self.budget.spend()

    def noised_mean(self, round_: int, clipped_sum: Vector) -> Vector:
        """Noise a weighted sum of clipped updates and divide by the expected weight.

        The seam secure aggregation uses: it hands over the unmasked sum instead of rows.
        """
        mechanism = dataclasses.replace(self.mechanism, clip_norm=self.clip_norm)
        return mechanism.finalize(clipped_sum, _rng(self.seed, round_, _NOISE))

    def should_stop(self, round_: int) -> bool:
        """Whether running ``round_`` would take epsilon past the target."""
        return self.budget.would_exceed()

    def round_metrics(self, round_: int) -> dict[str, object]:
        """Epsilon so far, delta, and the clip norm used in the last round."""
        return {**self.budget.metrics(), **self._last}

    def state_dict(self) -> dict[str, object]:
        """Accountant, adaptive clip norm and the inner server optimiser's state."""
        return {
            "kind": _KIND,
            "version": _VERSION,
            "budget": self.budget.state_dict(),
            "clipper": None if self.clipper is None else self.clipper.state_dict(),
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a state saved by ``state_dict``; refuses a state of another kind."""
        if state.get("kind") != _KIND or state.get("version") != _VERSION:
            raise ConfigError(f"cannot load a state of kind {state.get('kind')!r} into {_KIND}")
        if (state.get("clipper") is None) != (self.clipper is None):
            raise ConfigError("state and strategy disagree on adaptive clipping")
        self.budget.load_state_dict(state["budget"])
        if self.clipper is not None:
            self.clipper.load_state_dict(dict(state["clipper"]))
        if state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])


class EdgeSum(StrategyBase):
    """A trusted tree edge's part of DP-FedAvg: its sampled clients' clipped, weighted sum.

    Trust model: the edge sees its clients' updates in the clear (as the star's server does)
    and is trusted not to release them; only the root's noised sum is DP. Clients are sampled
    from the one Poisson stream over the whole ``population`` (the flat run's sampled set, by
    client index; None at an index: a client this edge does not serve). With ``nested``
    (simulation), nodes outside it are edges below, which always take part and report sums of
    their own; without (a deployed edge, ``murmura edge``), every child is a client of the
    population and every update is clipped here: a child is never trusted to clip itself.
    """

    def __init__(
        self,
        population: Sequence[str | None],
        rate: float,
        seed: int,
        weight_cap: float | None,
        *,
        nested: bool = True,
    ) -> None:
        self.population, self.rate, self.seed = list(population), rate, seed
        self.weight_cap, self.nested = weight_cap, nested
        self._members = frozenset(n for n in self.population if n is not None)

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The population's Poisson sample among ``nodes``, and every edge below (``nested``)."""
        chosen = poisson_members(self.seed, round_, self.population, self.rate)
        return [n for n in nodes if n in chosen or (self.nested and n not in self._members)]

    def partial_sum(
        self, round_: int, config: Mapping[str, Scalar], updates: UpdateBuffer
    ) -> tuple[Vector, dict[str, float]]:
        """Clients' updates clipped to the root's ``C`` and weighted, plus edges' sums."""
        if CLIP_KEY not in config:
            raise MurmuraError(f"round {round_}: the root sent no {CLIP_KEY!r} to the edge")
        rows, nodes = updates.rows(), updates.nodes
        own = np.array([n in self._members or not self.nested for n in nodes], dtype=bool)
        counts = np.asarray(updates.num_examples, dtype=np.float32)[own]
        part = ClippedSum.of(rows[own], counts, float(config[CLIP_KEY]), self.weight_cap)
        below = [m for m, o in zip(updates.metrics, own, strict=True) if not o]
        part = part + ClippedSum.of_partials(rows[~own], below)
        return part.total, part.metrics()

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Refused: an edge reports ``partial_sum`` to its parent, never a model."""
        raise MurmuraError("EdgeSum reports partial sums inside a tree; it is not a root")


class Accounted(Wrapper):
    """A strategy unchanged, with privacy budgets spent once per round (local DP, DP-SGD)."""

    def __init__(self, inner: Strategy, budgets: Sequence[PrivacyBudget]) -> None:
        if len({b.name for b in budgets}) != len(budgets):
            raise ConfigError("each privacy budget needs its own name")
        super().__init__(inner)
        self.budgets = list(budgets)

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """The inner strategy's aggregate; then every budget spends one round."""
        try:
            return self.inner.aggregate(round_, weights, updates, failures)
        finally:
            self._spend()

    def release(
        self, round_: int, weights: Vector, total: Sum | None, weight: float
    ) -> Vector | None:
        """The inner strategy's release; then every budget spends one round."""
        try:
            return self.inner.release(round_, weights, total, weight)
        finally:
            self._spend()

    def _spend(self) -> None:
        for budget in self.budgets:
            budget.spend()

    def should_stop(self, round_: int) -> bool:
        """Whether running ``round_`` would take any budget past its target."""
        return self.inner.should_stop(round_) or any(b.would_exceed() for b in self.budgets)

    def round_metrics(self, round_: int) -> dict[str, object]:
        """Each budget's epsilon so far (and the inner strategy's own metrics)."""
        out = dict(self.inner.round_metrics(round_))
        for budget in self.budgets:
            out.update(budget.metrics())
        return out

    def state_dict(self) -> dict[str, object]:
        """The budgets' and the inner strategy's states."""
        return {
            "kind": "accounted",
            "budgets": {b.name: b.state_dict() for b in self.budgets},
            "inner": self.inner.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the budgets and the inner strategy's state."""
        if state.get("kind") != "accounted":
            raise ConfigError(f"cannot load a state of kind {state.get('kind')!r} into accounted")
        for budget in self.budgets:
            budget.load_state_dict(state["budgets"][budget.name])
        if state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])
