"""A privacy budget: an accountant with the mechanism of one round, a delta and a target.

Each round composes ``steps_per_round`` sampled Gaussian mechanisms with noise multiplier
``z`` and sample rate ``q`` (Abadi et al. 2016; McMahan et al. 2018). ``would_exceed`` asks
the accountant what epsilon would be *after* the next round, so a run stops before the
target is crossed, never after. The last look-ahead is cached: spending the round it looked
at reuses it instead of asking ``dp-accounting`` again (that costs up to a second at small
``q``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from murmura.errors import ConfigError
from murmura.privacy.accountant import Accountant
from murmura.types import RoundMetrics

log = logging.getLogger(__name__)

_KIND = "privacy_budget"
_VERSION = 1
SUMMARY_KEYS = ("epsilon", "delta", "sample_epsilon", "sample_delta")
"""Round metrics that ``summary.json`` repeats from the last round."""


class PrivacyBudget:
    """Accounts one round at a time and tells when the next round would exceed the target."""

    def __init__(
        self,
        accountant: Accountant,
        *,
        noise_multiplier: float,
        sample_rate: float,
        delta: float,
        target_epsilon: float | None = None,
        steps_per_round: int = 1,
        name: str = "epsilon",
    ) -> None:
        if target_epsilon is not None and not target_epsilon > 0:
            raise ConfigError(f"target_epsilon must be > 0, got {target_epsilon!r}")
        self.accountant = accountant
        self.noise_multiplier, self.sample_rate = float(noise_multiplier), float(sample_rate)
        self.delta, self.target_epsilon = float(delta), target_epsilon
        self.steps_per_round, self.name = int(steps_per_round), name
        self._peek: tuple[int, float] | None = None  # (accountant steps after, epsilon)
        # refuse impossible parameters now (before training), not after the first round
        if target_epsilon is not None and (first := self._epsilon_after_next()) > target_epsilon:
            raise ConfigError(
                f"target_epsilon = {target_epsilon:g} is spent by a single round "
                f"(epsilon {first:.4g} with noise multiplier {noise_multiplier:g}, "
                f"sample rate {sample_rate:g}, delta {delta:g}): raise the noise or the target"
            )

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at ``delta``."""
        if self._peek is not None and self._peek[0] == self.accountant.steps:
            return self._peek[1]
        return self.accountant.get_epsilon(self.delta)

    def _epsilon_after_next(self) -> float:
        """Epsilon after one more round (cached until the accountant changes)."""
        after = self.accountant.steps + self.steps_per_round
        if self._peek is None or self._peek[0] != after:
            eps = self.accountant.epsilon_after(
                self.delta, self.noise_multiplier, self.sample_rate, self.steps_per_round
            )
            self._peek = (after, eps)
        return self._peek[1]

    def would_exceed(self) -> bool:
        """Whether one more round would take epsilon past ``target_epsilon``."""
        if self.target_epsilon is None:
            return False
        return self._epsilon_after_next() > self.target_epsilon

    def spend(self) -> float:
        """Account one round; returns the epsilon spent so far."""
        self.accountant.step(self.noise_multiplier, self.sample_rate, self.steps_per_round)
        return self.epsilon

    def metrics(self) -> dict[str, object]:
        """Entries for ``RoundMetrics.extra``: epsilon so far, delta and ``z``."""
        prefix = self.name.removesuffix("epsilon")
        return {
            self.name: self.epsilon,
            f"{prefix}delta": self.delta,
            f"{prefix}noise_multiplier": self.noise_multiplier,
        }

    def state_dict(self) -> dict[str, Any]:
        """The accountant's state with this budget's parameters (JSON-serialisable)."""
        return {
            "kind": _KIND,
            "version": _VERSION,
            "name": self.name,
            "accountant": self.accountant.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the spent budget; refuses a state of another kind or another budget."""
        if state.get("kind") != _KIND or state.get("version") != _VERSION:
            raise ConfigError(
                f"cannot load a state of kind {state.get('kind')!r} into a privacy budget"
            )
        if state.get("name") != self.name:
            raise ConfigError(f"state is for budget {state.get('name')!r}, not {self.name!r}")
        self.accountant.load_state_dict(dict(state["accountant"]))
        self._peek = None
        log.info("privacy budget %s restored: epsilon %.4g", self.name, self.epsilon)


def charge_through(budgets: Sequence[PrivacyBudget], rounds: int) -> None:
    """Account every round up to ``rounds`` in each budget that has not yet.

    A deployed peer is charged for every round of the schedule, also one it skipped after a
    restart or a jump to its neighbours' round, as every peer is in the simulation.
    """
    for budget in budgets:
        while budget.accountant.steps < rounds * budget.steps_per_round:
            budget.spend()


def privacy_summary(rounds: Sequence[RoundMetrics], planned_rounds: int) -> dict[str, object]:
    """Privacy entries for ``summary.json``: the last round's epsilon(s), and an early stop."""
    if not rounds:
        return {}
    last = rounds[-1].extra
    out: dict[str, object] = {k: last[k] for k in SUMMARY_KEYS if k in last}
    if out:
        out["stopped_early"] = rounds[-1].round < planned_rounds
    return out
