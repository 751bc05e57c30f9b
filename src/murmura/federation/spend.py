"""What a job spends of a site's privacy: its mechanism, read from the config, never trusted.

A job's client-level mechanism (``[privacy] mode = "local"`` or ``"central"``) is ``steps``
sampled Gaussian mechanisms with noise multiplier ``z`` and sample rate ``q`` (DP-FedAvg,
McMahan et al. 2018), one per round: ``q = 1`` for local DP, ``strategy.fraction`` for
central DP. ``z`` is the configured one or the one planned for ``target_epsilon``, and the
steps are the rounds the run would train before its budget stops it, exactly as ``murmura
run`` does, so the epsilon computed here is the one the run reports. A client-level guarantee
covers every record a site holds, so it is what a site accounts across jobs.

Composition over jobs uses the accountant (``murmura.privacy.accountant``) on the
concatenated histories: for RDP this adds the jobs' RDP curves order by order (Mironov 2017,
"Renyi differential privacy", Prop. 1) and converts to ``(epsilon, delta)`` once, at the site's
delta, instead of adding the jobs' epsilons and deltas (basic composition).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from murmura.privacy.accountant import Entry, create_accountant, plan_noise_multiplier
from murmura.privacy.checks import client_sample_rate

if TYPE_CHECKING:
    from murmura.config import Config


@dataclass(frozen=True, slots=True)
class JobSpend:
    """A job's client-level mechanism: ``steps`` Gaussian steps ``(z, q)``; the job's accountant."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str

    @property
    def history(self) -> tuple[Entry, ...]:
        """The job's accountant history (``Accountant.history`` of a run of this job)."""
        return ((self.noise_multiplier, self.sample_rate, self.steps),)

    def epsilon(self, delta: float, accountant: str | None = None) -> float:
        """Epsilon of the whole job at ``delta`` (the job's own accountant by default)."""
        return composed_epsilon([self.history], delta, accountant or self.accountant)


def composed_epsilon(histories: Iterable[Iterable[Entry]], delta: float, accountant: str) -> float:
    """Epsilon at ``delta`` of every history composed, by the accountant ``accountant``."""
    acc = create_accountant(accountant)
    for history in histories:
        for z, q, n in history:
            acc.step(z, q, n)
    return acc.get_epsilon(delta)


def job_spend(cfg: Config) -> JobSpend | None:
    """The client-level mechanism a run of ``cfg`` applies; None if it has none (no DP).

    ``[privacy] dp_sgd`` alone is sample-level DP whose epsilon depends on each site's data
    size: it is not a client-level mechanism, so it gives None here.
    """
    p = cfg.privacy
    if p.mode == "none":
        return None
    q = client_sample_rate(cfg)
    z = p.noise_multiplier
    if z is None:  # planned as ``murmura.privacy.wiring.resolve_noise_multiplier`` does
        assert p.target_epsilon is not None  # check_privacy refuses neither
        z = plan_noise_multiplier(
            p.target_epsilon, p.delta, cfg.run.rounds, q, p.accountant
        ).noise_multiplier
    steps = cfg.run.rounds
    if p.target_epsilon is not None:
        steps = _rounds_within(z, q, cfg.run.rounds, p.delta, p.target_epsilon, p.accountant)
    return JobSpend(float(z), float(q), steps, p.accountant)


def _rounds_within(z: float, q: float, rounds: int, delta: float, target: float, kind: str) -> int:
    """Rounds a run trains before ``target`` would be exceeded (``PrivacyBudget.would_exceed``).

    Epsilon grows with the number of steps, so the last round within the target is found by
    bisection; a run always trains its first round (the config refuses a target it exceeds).
    """

    def within(n: int) -> bool:
        return composed_epsilon([[(z, q, n)]], delta, kind) <= target

    if within(rounds):
        return rounds
    lo, hi = 1, rounds  # within(lo), not within(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if within(mid) else (lo, mid)
    return lo
