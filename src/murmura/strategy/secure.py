"""Secure aggregation around a FedAvg-family strategy: SecAgg+ (Bell et al. 2020).

``SecureAggregation`` replaces "combine the individual updates" with "mask, sum, unmask":
the round's validated updates (the runtime checks shape and finiteness *before* masking, so
a NaN is never masked into the sum) go through :func:`run_secagg_round`, where each client
masks ``w * update`` and ``w``; the server learns only the weighted sum and total weight of
the survivors. The inner strategy's ``server_update`` (FedAvg's step, FedAvgM, FedAdam, ...)
is then applied to ``weighted_sum / total_weight``.

With central DP (``DifferentiallyPrivate`` inside, possibly under ``Accounted``) each client
clips its delta to L2 norm ``C`` and masks it with DP's weight ``min(n / weight_cap, 1)`` (1
without a cap), and the server adds the noise to the unmasked sum (``CentralDP.finalize``),
as in DP-FedAvg (McMahan et al. 2018).

Dropouts become round failures with their reasons. A ``SecAggAbort`` (too few survivors in
some neighbourhood) leaves the model bitwise unchanged and is reported in the round's
metrics; the run goes on. Privacy budgets are spent for every round, aborted or not
(an upper bound on what an aborted round costs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from murmura.aggregate.buffer import UpdateBuffer
from murmura.errors import ConfigError
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.clipping import clip_rows
from murmura.privacy.secagg import (
    SecAggAbort,
    SecAggResult,
    Stage,
    default_neighbours,
    default_threshold,
    run_secagg_round,
)
from murmura.seeding import derive_seed
from murmura.strategy.base import Strategy
from murmura.strategy.dp import Accounted, DifferentiallyPrivate, client_weights
from murmura.strategy.fedavg import FedAvg
from murmura.strategy.hooks import DelegatesEvaluation
from murmura.types import Failure, RoundMetrics, Scalar, Vector

log = logging.getLogger(__name__)

# Random streams per (seed, round): simulated dropouts, stochastic rounding and the public
# neighbour graph. _DP_NOISE is the stream DifferentiallyPrivate draws its noise from, so a
# run with and without secure aggregation adds the same noise.
_DROPOUT, _ROUNDING = 0xD209, 0x5EC4


@dataclass(frozen=True, slots=True)
class SecAggParams:
    """Public parameters of every secure round, and simulated dropouts for experiments.

    ``neighbours`` (k) and ``threshold`` (t) default to :func:`default_neighbours` of the
    round's cohort and :func:`default_threshold`; for a smaller cohort k is capped at n - 1
    (the complete graph, plain SecAgg) and t at k + 1. Each update coordinate is clipped to
    ``[-clip, clip]`` and each weight to ``[0, max_weight]`` before quantisation
    (``max_weight=None``: the round's largest weight, for simulation only).
    ``dropout[stage]`` is the fraction of the cohort that stops answering at that stage.
    """

    neighbours: int | None = None
    threshold: int | None = None
    clip: float = 1.0
    max_weight: float | None = None
    rounding: Literal["stochastic", "deterministic"] = "stochastic"
    dropout: Mapping[Stage, float] = field(default_factory=dict)
    seed: int = 0

    def graph(self, n: int) -> tuple[int, int]:
        """(k, t) for a cohort of ``n`` clients."""
        k = default_neighbours(n) if self.neighbours is None else min(self.neighbours, n - 1)
        t = default_threshold(k) if self.threshold is None else min(self.threshold, k + 1)
        return k, t

    def dropouts(self, round_: int, n: int) -> dict[Stage, set[int]]:
        """Seeded simulated dropouts: ``round(fraction * n)`` of those still present per stage."""
        rng = np.random.default_rng(derive_seed(self.seed, round_, _DROPOUT))
        present, out = list(range(n)), {}
        for stage in Stage:
            count = min(len(present), round(self.dropout.get(stage, 0.0) * n))
            gone = {present[i] for i in rng.choice(len(present), size=count, replace=False)}
            present = [u for u in present if u not in gone]
            out[stage] = gone
        return out


def _fedavg_base(strategy: Strategy) -> FedAvg:
    """The FedAvg-family strategy that applies the server update; others are refused."""
    if not isinstance(strategy, FedAvg):
        raise ConfigError(
            f"secure aggregation wraps FedAvg-family strategies; got {type(strategy).__name__}"
        )
    if type(strategy).aggregate is not FedAvg.aggregate or hasattr(strategy, "wrap_client"):
        raise ConfigError(
            f"secure aggregation needs FedAvg's round (combine, then server_update); "
            f"{type(strategy).__name__} changes it"
        )
    if not strategy.aggregator.linear:
        raise ConfigError(
            f"aggregator {strategy.aggregator.name!r} needs every client's individual update, "
            f"and under secure aggregation the server only ever sees their sum"
        )
    return strategy


@dataclass(slots=True)
class _Report:
    """What one round adds to its metrics."""

    participants: int | None = None
    failures: list[Failure] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)


class SecureAggregation(DelegatesEvaluation):
    """SecAgg+ in place of the plaintext combination of a FedAvg-family strategy."""

    def __init__(self, inner: Strategy, params: SecAggParams) -> None:
        self.inner, self.params = inner, params
        core = inner.inner if isinstance(inner, Accounted) else inner
        self.budgets: tuple[PrivacyBudget, ...] = (
            tuple(inner.budgets) if isinstance(inner, Accounted) else ()
        )
        self.dp = core if isinstance(core, DifferentiallyPrivate) else None
        self.base = _fedavg_base(self.dp.inner if self.dp is not None else core)
        if self.dp is not None and self.dp.clipper is not None:
            raise ConfigError("adaptive clipping needs each update's norm; the server sees sums")
        self._report = _Report()

    @property
    def keep_rows(self) -> bool:
        """The simulated clients mask their own rows."""
        return True

    def sample(self, round_: int, nodes: Sequence[str]) -> list[str]:
        """The inner strategy's sample (Poisson sampling under central DP)."""
        return self.inner.sample(round_, nodes)

    def configure(self, round_: int, weights: Vector) -> dict[str, Scalar]:
        """The inner strategy's instructions."""
        return self.inner.configure(round_, weights)

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Mask, sum and unmask the round's updates; the inner server update applies the mean."""
        self._report = _Report()
        try:
            new = self._secure_round(round_, weights, updates)
        finally:
            for budget in self._budgets():
                budget.spend()
        return new

    def _budgets(self) -> list[PrivacyBudget]:
        return ([self.dp.budget] if self.dp is not None else []) + list(self.budgets)

    def _secure_round(self, round_: int, weights: Vector, updates: UpdateBuffer) -> Vector | None:
        n = len(updates)
        if self.dp is None and n < self.base.min_clients:
            log.warning("round %d: %d results < min_clients %d; model unchanged",
                        round_, n, self.base.min_clients)  # fmt: skip
            self._report.participants = 0
            return None
        dropouts = self.params.dropouts(round_, n)
        try:
            result: SecAggResult | SecAggAbort = self._run(round_, updates, dropouts)
        except SecAggAbort as exc:
            result = exc
        return self._conclude(round_, weights, updates.nodes, dropouts, result)

    def conclude(
        self,
        round_: int,
        weights: Vector,
        nodes: Sequence[str],
        outcome: SecAggResult | SecAggAbort,
    ) -> Vector | None:
        """The next model from a round whose SecAgg+ stages ran elsewhere (a deployment).

        ``nodes[u]`` is the node of SecAgg index ``u``; ``outcome`` the server's result or the
        abort. Failures and figures go to :meth:`report`; budgets are spent as in
        :meth:`aggregate`.
        """
        self._report = _Report()
        try:
            return self._conclude(round_, weights, nodes, {}, outcome)
        finally:
            for budget in self._budgets():
                budget.spend()

    def _conclude(
        self,
        round_: int,
        weights: Vector,
        nodes: Sequence[str],
        dropouts: Mapping[Stage, set[int]],
        outcome: SecAggResult | SecAggAbort,
    ) -> Vector | None:
        if isinstance(outcome, SecAggAbort):
            self._aborted(round_, nodes, dropouts, outcome)
            return None
        self._record(nodes, dropouts, outcome)
        if self.dp is None and len(outcome.survivors) < self.base.min_clients:
            log.warning("round %d: %d survivors < min_clients %d; model unchanged",
                        round_, len(outcome.survivors), self.base.min_clients)  # fmt: skip
            return None
        return self._release(round_, weights, outcome)

    def _run(
        self, round_: int, updates: UpdateBuffer, dropouts: Mapping[Stage, set[int]]
    ) -> SecAggResult:
        """One SecAgg+ round over the rows (clipped to C with weight 1 under central DP)."""
        n, p = len(updates), self.params
        if n < 2:
            raise SecAggAbort("advertise", round_, f"{n} client(s) in the round, at least 2 needed")
        rows: NDArray[np.float32] = updates.rows()
        w = np.asarray(updates.num_examples, dtype=np.float64)
        max_weight = p.max_weight
        if self.dp is not None:
            rows, _ = clip_rows(rows, self.dp.clip_norm)
            w, max_weight = client_weights(updates.weights(), self.dp.weight_cap), 1.0
        k, t = p.graph(n)
        return run_secagg_round(
            rows, w, threshold=t, neighbours=k, dropouts=dropouts,
            seed=derive_seed(p.seed, round_, _ROUNDING), clip=p.clip,
            max_weight=max_weight, rounding=p.rounding, round_=round_,
        )  # fmt: skip

    def _release(self, round_: int, weights: Vector, result: SecAggResult) -> Vector | None:
        """The next model from the unmasked sum: DP noise first when central DP is on."""
        if self.dp is not None:
            delta = self.dp.noised_mean(round_, result.weighted_sum.astype(np.float32))
            self._report.extra["dp_clip_norm"] = self.dp.clip_norm
        elif result.total_weight > 0:
            delta = (result.weighted_sum / result.total_weight).astype(np.float32)
        else:
            log.warning("round %d: survivors' total weight is 0; model unchanged", round_)
            return None
        return self.base.server_update(weights, delta)

    def _record(
        self, nodes: Sequence[str], dropouts: Mapping[Stage, set[int]], result: SecAggResult
    ) -> None:
        """Failures for everyone not in the sum; survivors, bytes and seconds in metrics."""
        survivors = set(result.survivors)
        for u in (u for u in range(len(nodes)) if u not in survivors):
            reason = result.excluded.get(u) or _dropout_reason(u, dropouts)
            self._report.failures.append(Failure(nodes[u], f"secagg: {reason}"))
        sent = [result.bytes_sent.get(u, 0) for u in result.survivors]
        spent = [result.client_seconds.get(u, 0.0) for u in result.survivors]
        self._report.participants = len(survivors)
        self._report.extra.update(
            secagg_aborted=False,
            secagg_survivors=len(survivors),
            secagg_bytes_per_client=float(np.mean(sent)) if sent else 0.0,
            secagg_client_seconds=float(np.mean(spent)) if spent else 0.0,
            secagg_server_seconds=result.server_seconds,
        )

    def _aborted(
        self,
        round_: int,
        nodes: Sequence[str],
        dropouts: Mapping[Stage, set[int]],
        exc: SecAggAbort,
    ) -> None:
        """Model unchanged; the abort and the simulated dropouts go to the round's report."""
        log.warning("round %d: %s; model unchanged", round_, exc)
        gone = sorted(set().union(*dropouts.values()))
        self._report.participants = 0
        self._report.failures.extend(
            Failure(nodes[u], f"secagg: {_dropout_reason(u, dropouts)}; round aborted")
            for u in gone
        )
        self._report.extra.update(
            secagg_aborted=True,
            secagg_abort_stage=exc.stage,
            secagg_abort_reason=exc.reason,
            secagg_survivors=0,
        )

    def report(self, round_: int, metrics: RoundMetrics) -> None:
        """Add this round's secure-aggregation failures and figures to its metrics."""
        if self._report.participants is not None:
            metrics.participants = self._report.participants
        metrics.failures.extend(self._report.failures)
        metrics.extra.update(self._report.extra)

    def should_stop(self, round_: int) -> bool:
        """The inner strategy's budget decision (never, without one)."""
        stop = getattr(self.inner, "should_stop", None)
        return bool(stop(round_)) if callable(stop) else False

    def round_metrics(self, round_: int) -> dict[str, object]:
        """The inner strategy's per-round metrics (epsilon under DP)."""
        own = getattr(self.inner, "round_metrics", None)
        return dict(own(round_)) if callable(own) else {}

    def state_dict(self) -> dict[str, object]:
        """The inner strategy's state (secure aggregation keeps none between rounds)."""
        inner = getattr(self.inner, "state_dict", None)
        return {"kind": "secagg", "inner": inner() if callable(inner) else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the inner strategy's state; refuses a state of another kind."""
        if state.get("kind") != "secagg":
            raise ConfigError(f"cannot load a state of kind {state.get('kind')!r} into secagg")
        load_inner = getattr(self.inner, "load_state_dict", None)
        if callable(load_inner) and state.get("inner") is not None:
            load_inner(state["inner"])


def _dropout_reason(u: int, dropouts: Mapping[Stage, set[int]]) -> str:
    """Why client index ``u`` is missing from the sum."""
    for stage, gone in dropouts.items():
        if u in gone:
            return f"dropped at stage {stage.name.lower()} (simulated)"
    return "left the round (too few neighbours survived)"
