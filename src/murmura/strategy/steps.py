"""``[strategy] normalize_steps``: FedNova's step normalisation around any FedAvg-like strategy.

``StepNormalised`` rescales each update of the round to ``tau_eff`` local steps
(``murmura.aggregate.steps``) and hands the rescaled rows to the inner strategy, whose rule
and server step are unchanged. Every place that aggregates with ``[strategy]`` wraps its
strategy here (the simulated star and each simulated tree edge, the deployed coordinator and
each deployed edge), so the setting acts identically in all of them. ``tau_eff`` is FedNova's
weighted mean of the reported counts, each clamped near their median first when the rule is
robust (a non-linear rule or a pre-aggregation); see the math module for why.

An update without a valid ``local_steps`` metric is left out of the round, with a warning
naming node and round (validation already rejects a malformed one,
``murmura.validation.local_steps_valid``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from murmura.aggregate.buffer import UpdateBuffer
from murmura.aggregate.steps import LOCAL_STEPS, MAX_LOCAL_STEPS, normalise_steps
from murmura.errors import ConfigError
from murmura.strategy.base import Strategy, Wrapper
from murmura.types import Failure, Vector

log = logging.getLogger(__name__)


def reported_steps(metrics: object) -> int | None:
    """The step count a result's metrics carry, if it is an integer in ``[1, MAX_LOCAL_STEPS]``."""
    if not isinstance(metrics, dict) and not hasattr(metrics, "get"):
        return None
    value = metrics.get(LOCAL_STEPS)
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    v = float(value)
    if not (1 <= v <= MAX_LOCAL_STEPS) or v != int(v):
        return None
    return int(v)


class StepNormalised(Wrapper):
    """The inner strategy on this round's updates, each rescaled to ``tau_eff`` local steps."""

    def __init__(self, inner: Strategy, max_weight_share: float | None = None) -> None:
        super().__init__(inner)
        self.max_weight_share = max_weight_share
        self.last_tau_eff: float | None = None
        self._last: tuple[UpdateBuffer, UpdateBuffer] | None = None
        """This round's buffer and its rescaled copy, for ``combine`` after ``aggregate``."""

    @property
    def robust(self) -> bool:
        """Whether the inner rule is robust (not the linear weighted mean)."""
        rule = getattr(self.inner, "aggregator", None)
        return rule is not None and not bool(getattr(rule, "linear", True))

    @property
    def aggregator(self) -> object:
        """The inner strategy's rule (anomaly scores and breakdown warnings read it)."""
        return getattr(self.inner, "aggregator", None)

    @property
    def keep_rows(self) -> bool:
        """Every row is rescaled by its own count, so rows are kept."""
        return True

    def linear_refusal(self) -> str | None:
        """A sum computed elsewhere (secure aggregation, central DP) hides each step count."""
        return (
            "strategy.normalize_steps divides each client's update by its own step count, "
            "which a sum computed without the server seeing each update cannot do"
        )

    def normalised(self, round_: int, updates: UpdateBuffer) -> UpdateBuffer:
        """A buffer with the rows rescaled to ``tau_eff`` steps (rows without a count left out)."""
        rows = updates.rows()
        keep: list[int] = []
        steps: list[int] = []
        for i, (node, metrics) in enumerate(zip(updates.nodes, updates.metrics, strict=True)):
            tau = reported_steps(metrics)
            if tau is None:
                log.warning(
                    "round %d node %s: no valid %s reported; left out "
                    "(strategy.normalize_steps)",
                    round_,
                    node,
                    LOCAL_STEPS,
                )
                continue
            keep.append(i)
            steps.append(tau)
        out = UpdateBuffer(len(keep), updates.dim, True, self.max_weight_share)
        if not keep:
            self.last_tau_eff = None
            return out
        counts = np.asarray([updates.num_examples[i] for i in keep], dtype=np.float32)
        scaled, self.last_tau_eff = normalise_steps(rows[keep], steps, counts, self.robust)
        for j, i in enumerate(keep):
            out.add(updates.nodes[i], scaled[j], updates.num_examples[i], updates.metrics[i])
        return out

    def aggregate(
        self, round_: int, weights: Vector, updates: UpdateBuffer, failures: Sequence[Failure]
    ) -> Vector | None:
        """The inner strategy's aggregate of the rescaled rows."""
        rescaled = self.normalised(round_, updates)
        self._last = (updates, rescaled)
        return self.inner.aggregate(round_, weights, rescaled, failures)

    def combine(self, updates: UpdateBuffer) -> Vector:
        """The inner rule's delta of the rescaled rows (what anomaly scores compare against)."""
        last = self._last
        rescaled = last[1] if last is not None and last[0] is updates else None
        combine = getattr(self.inner, "combine")  # noqa: B009 - FedAvg's, checked at load
        out: Vector = combine(rescaled if rescaled is not None else self.normalised(0, updates))
        return out

    def round_metrics(self, round_: int) -> dict[str, object]:
        """The inner metrics and this round's ``tau_eff``."""
        out = dict(self.inner.round_metrics(round_))
        if self.last_tau_eff is not None:
            out["tau_eff"] = round(self.last_tau_eff, 6)
        return out


def with_step_normalisation(
    strategy: Strategy, enabled: bool, max_weight_share: float | None = None
) -> Strategy:
    """``strategy`` wrapped in ``StepNormalised`` when ``[strategy] normalize_steps`` is on."""
    return StepNormalised(strategy, max_weight_share) if enabled else strategy


def check_normalize_steps(cfg: Any) -> None:
    """Refuse ``normalize_steps`` where a role could not honour it, naming the section and role."""
    if not cfg.strategy.normalize_steps:
        return
    kind = cfg.topology.kind
    if kind not in ("star", "tree"):
        raise ConfigError(
            f"topology.kind = {kind!r} is peer-to-peer: a peer mixes its neighbours' models "
            "with graph weights, not their updates, so it has no per-update step count to "
            "normalise; unset it (it applies at a star's server and at each tree edge)"
        )
    if cfg.secagg.enabled:
        raise ConfigError(
            "cannot be combined with secagg.enabled = true: the server (or edge) sees only the "
            "sum of the round's updates, never one update to divide by its step count"
        )
    if cfg.privacy.mode != "none":
        raise ConfigError(
            f"cannot be combined with privacy.mode = {cfg.privacy.mode!r}: central DP sums "
            "clipped updates without the server weighting each one, and a local-DP client "
            "sends a noised update with no step count; unset one of them"
        )
    if cfg.strategy.name == "scaffold":
        raise ConfigError(
            "cannot be combined with strategy.name = 'scaffold': SCAFFOLD's control variates "
            "already correct each client's drift per local step; use fedavg or a FedOpt "
            "server optimiser"
        )
    if cfg.clock.enabled and cfg.clock.mode == "async":
        raise ConfigError(
            "cannot be combined with clock.mode = 'async': the asynchronous server weights "
            "each update by its staleness on arrival, one at a time, and has no round of "
            "step counts to take tau_eff over; use clock.mode = 'sync'"
        )
