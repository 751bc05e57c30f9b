"""Secure aggregation around any strategy whose round is the linear pipeline: SecAgg+.

``SecureAggregation`` (Bell et al. 2020) replaces the pipeline's "weighted sum" with "mask,
sum, unmask": the round's validated updates (the runtime checks shape and finiteness
*before* masking, so a NaN is never masked into the sum) go through
:func:`run_secagg_round`, where each client masks ``w * update`` and ``w``; the server
learns only the weighted sum and total weight of the survivors and hands them to the inner
strategy's ``release`` (FedAvg's step, FedAvgM, FedAdam, ...; under central DP the noise,
then the step). It never looks inside: what each client clips and how it weighs comes from
the inner strategy's ``client_clip`` (central DP: L2 norm ``C``, weight
``min(n / weight_cap, 1)``, as in DP-FedAvg, McMahan et al. 2018).

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
from murmura.privacy.clipping import clip_rows
from murmura.privacy.secagg import (
    SecAggAbort,
    SecAggResult,
    Stage,
    default_neighbours,
    default_threshold,
    run_secagg_round,
)
from murmura.privacy.secagg.messages import masked_input_size
from murmura.seeding import derive_seed
from murmura.strategy.base import Strategy, Wrapper
from murmura.strategy.dp import check_linear, client_weights
from murmura.types import Failure, RoundMetrics, Vector

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
    ``level_bits`` quantises each update to that many bits on the public grid and masks in
    the ring 2^16 (``compression.uplink = 'quantize'``; None: fixed point mod 2^32).
    """

    neighbours: int | None = None
    threshold: int | None = None
    clip: float = 1.0
    max_weight: float | None = None
    rounding: Literal["stochastic", "deterministic"] = "stochastic"
    dropout: Mapping[Stage, float] = field(default_factory=dict)
    seed: int = 0
    level_bits: int | None = None

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


@dataclass(slots=True)
class _Report:
    """What one round adds to its metrics."""

    participants: int | None = None
    failures: list[Failure] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)


class SecureAggregation(Wrapper):
    """SecAgg+ in place of the plaintext weighted sum of the inner strategy's pipeline."""

    def __init__(self, inner: Strategy, params: SecAggParams) -> None:
        super().__init__(check_linear(inner, "secure aggregation"))
        self.params = params
        self.clip = inner.client_clip()
        """What each client does to its update before masking (central DP), or None."""
        self._report = _Report()

    @property
    def keep_rows(self) -> bool:
        """The simulated clients mask their own rows."""
        return True

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """Mask, sum and unmask the round's updates; the inner strategy releases the sum."""
        self._report = _Report()
        n = len(updates)
        if n < self.inner.min_results:
            log.warning("round %d: %d results < min_clients %d; model unchanged",
                        round_, n, self.inner.min_results)  # fmt: skip
            self._report.participants = 0
            return self.inner.release(round_, weights, None, 0.0)  # budgets are still spent
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
        return self._conclude(round_, weights, nodes, {}, outcome)

    def _conclude(
        self,
        round_: int,
        weights: Vector,
        nodes: Sequence[str],
        dropouts: Mapping[Stage, set[int]],
        outcome: SecAggResult | SecAggAbort,
    ) -> Vector | None:
        """Release the unmasked sum; an abort or too few survivors release none (model kept)."""
        if isinstance(outcome, SecAggAbort):
            self._aborted(round_, nodes, dropouts, outcome)
            return self.inner.release(round_, weights, None, 0.0)
        self._record(nodes, dropouts, outcome)
        if len(outcome.survivors) < self.inner.min_results:
            log.warning("round %d: %d survivors < min_clients %d; model unchanged",
                        round_, len(outcome.survivors), self.inner.min_results)  # fmt: skip
            return self.inner.release(round_, weights, None, 0.0)
        if self.clip is not None:
            self._report.extra["dp_clip_norm"] = self.clip.clip_norm
        return self.inner.release(round_, weights, outcome.weighted_sum, outcome.total_weight)

    def _run(
        self, round_: int, updates: UpdateBuffer, dropouts: Mapping[Stage, set[int]]
    ) -> SecAggResult:
        """One SecAgg+ round over the rows, clipped and weighted as ``client_clip`` says."""
        n, p = len(updates), self.params
        if n < 2:
            raise SecAggAbort("advertise", round_, f"{n} client(s) in the round, at least 2 needed")
        rows: NDArray[np.float32] = updates.rows()
        w = np.asarray(updates.num_examples, dtype=np.float64)
        max_weight = p.max_weight
        if self.clip is not None:
            rows, _ = clip_rows(rows, self.clip.clip_norm)
            w, max_weight = client_weights(updates.weights(), self.clip.weight_cap), 1.0
        k, t = p.graph(n)
        return run_secagg_round(
            rows, w, threshold=t, neighbours=k, dropouts=dropouts,
            seed=derive_seed(p.seed, round_, _ROUNDING), clip=p.clip,
            max_weight=max_weight, rounding=p.rounding, round_=round_, level_bits=p.level_bits,
        )  # fmt: skip

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
        masked = float(masked_input_size(result.raw_sum.size, result.raw_sum.itemsize))
        self._report.extra.update(  # the update's bytes: the masked input in the config's ring
            bytes_up_mean=masked if survivors else 0.0,
            bytes_up_max=masked if survivors else 0.0,
            bytes_up_total=masked * len(survivors),
        )
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

    def state_dict(self) -> dict[str, object]:
        """The inner strategy's state (secure aggregation keeps none between rounds)."""
        return {"kind": "secagg", "inner": self.inner.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the inner strategy's state; refuses a state of another kind."""
        if state.get("kind") != "secagg":
            raise ConfigError(f"cannot load a state of kind {state.get('kind')!r} into secagg")
        if state.get("inner") is not None:
            self.inner.load_state_dict(state["inner"])


def _dropout_reason(u: int, dropouts: Mapping[Stage, set[int]]) -> str:
    """Why client index ``u`` is missing from the sum."""
    for stage, gone in dropouts.items():
        if u in gone:
            return f"dropped at stage {stage.name.lower()} (simulated)"
    return "left the round (too few neighbours survived)"
