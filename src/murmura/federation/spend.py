"""What a job spends of a site's privacy: its mechanisms, read from the config, never trusted.

Every part of a job that releases something computed from a site's data is either charged to
the site's ledger (``murmura.federation.budget``) with the accountant's epsilon, or makes a
site whose policy requires DP refuse the job with the reason (``unprotected``):

=====================  ==========================================  ===========================
mode (job config)      charged to the site, as ``(z, q, steps)``    why this way
=====================  ==========================================  ===========================
central DP             the whole job, ``(z, fraction, rounds)``,    the server adds the noise
                       before the site's first training round       and samples the clients:
                       (``privacy.mode = "central"``)               the site trusts it (a files
                                                                    job's coordinator refuses
                                                                    the mode, so it never runs)
local DP               the whole job, ``(z, 1, rounds)``, before     the site clips and noises
                       the site's first training round              its own update (client-
                       (``privacy.mode = "local"``)                 level: covers every record)
DP-SGD alone           each round the site trains, before its        example-level: ``q`` and the
                       update leaves: ``(z_sgd, B / n, E *          steps depend on the site's
                       round(n / B))`` on its own ``n`` examples     own ``n``, and the server
                       and the round's batch size and epochs;       may override ``B`` and ``E``
                       admitted on the worst case over all ``n``    per round; ``n`` is unknown
                       (``privacy.dp_sgd``, ``mode = "none"``)      before the data is read
DP-SGD with local or   as local or central DP: the client-level     a client-level guarantee
central DP             charge covers it                             bounds every record's too
noised statistics      ``(z_stats, 1, 1)`` once per job, when the   the coordinator noises the
                       site answers the statistics phase            sums (central DP, trusted);
                       (``[stats] noise_multiplier > 0``)           every row is in them
exact statistics       nothing: a site whose policy requires DP     the sums are exact (secure
                       refuses the job (``[stats] enabled``,        aggregation hides a site's
                       ``noise_multiplier = 0``)                    own, not the total)
training without DP    nothing: a site whose policy requires DP     its updates are exact
                       refuses the job
=====================  ==========================================  ===========================

Client-level ``(epsilon, delta)`` (a site's whole data) implies the same example-level
guarantee, so the ledger composes every part in example-level terms, conservatively.

A job's client-level mechanism (``[privacy] mode = "local"`` or ``"central"``) is ``steps``
sampled Gaussian mechanisms with noise multiplier ``z`` and sample rate ``q`` (DP-FedAvg,
McMahan et al. 2018), one per round: ``q = 1`` for local DP, ``strategy.fraction`` for
central DP. ``z`` is the configured one or the one planned for ``target_epsilon``, and the
steps are the rounds the run would train before its budget stops it, exactly as ``murmura
run`` does, so the epsilon computed here is the one the run reports. DP-SGD (Abadi et al.
2016) is ``steps`` Poisson-sampled Gaussian steps at rate ``B / n`` per round
(``murmura.privacy.dp_client.dp_sgd_schedule``); the statistics phase one Gaussian release
of every row (``murmura.analytics.bounded.statistics_epsilon``).

Composition over jobs uses the accountant (``murmura.privacy.accountant``) on the
concatenated histories: for RDP this adds the jobs' RDP curves order by order (Mironov 2017,
"Renyi differential privacy", Prop. 1) and converts to ``(epsilon, delta)`` once, at the site's
delta, instead of adding the jobs' epsilons and deltas (basic composition).
"""

from __future__ import annotations

import functools
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
    flat = tuple((float(z), float(q), int(n)) for history in histories for z, q, n in history)
    return _composed(flat, delta, accountant)


@functools.lru_cache(maxsize=512)
def _composed(entries: tuple[Entry, ...], delta: float, accountant: str) -> float:
    """``composed_epsilon`` of one flat history, cached.

    A site asks for the same histories again and again (at admission, at every charge), and
    dp-accounting takes about 0.1 s for a subsampled curve.
    """
    acc = create_accountant(accountant)
    for z, q, n in entries:
        acc.step(z, q, n)
    return acc.get_epsilon(delta)


def job_spend(cfg: Config) -> JobSpend | None:
    """The client-level mechanism a run of ``cfg`` applies; None if it has none (no DP).

    ``[privacy] dp_sgd`` alone is example-level DP whose epsilon depends on each site's data
    size: it is not a client-level mechanism, so it gives None here (``dp_sgd_round``).
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


MAX_BATCHES = 64
"""Largest ``round(n / B)`` the DP-SGD worst case looks at (it stops once epsilon falls)."""


@dataclass(frozen=True, slots=True)
class Release:
    """A part of a job that releases a site's data under DP, and the most it can spend."""

    key: str
    """The job's config key of its noise (named in a site's reasons)."""
    noise_multiplier: float
    history: tuple[Entry, ...]


def dp_sgd_round(
    noise_multiplier: float,
    num_examples: int,
    batch_size: int,
    epochs: int,
    local_steps: int | None = None,
) -> Entry:
    """One round of DP-SGD on a site's ``num_examples``: ``(z, B / n, steps)``, as it trains.

    The sample rate and steps are ``dp_sgd_schedule``'s, which ``train_dp_sgd`` runs.
    """
    from murmura.privacy.dp_client import dp_sgd_schedule

    q, steps = dp_sgd_schedule(num_examples, batch_size, epochs, local_steps)
    return (float(noise_multiplier), q, steps)


def dp_sgd_worst_case(cfg: Config, delta: float, accountant: str) -> JobSpend:
    """The most a DP-SGD job can spend of one site's data, whatever its size ``n``.

    With ``k = round(n / B)`` batches per epoch a round is ``E k`` steps at rate ``B / n``;
    for a given ``k`` epsilon grows with the rate, so the fewest ``n`` with ``k`` batches is
    the worst. Over ``k`` epsilon rises for the first few (the rate stays near 1 while the
    steps grow) and then falls like ``1 / sqrt(k)`` (rate ``1 / k``, ``E k`` steps: Abadi et
    al. 2016, Thm. 1), so the search stops after two falls in a row (or ``MAX_BATCHES``).
    Every round of ``run.rounds`` is counted: a files job's coordinator cannot stop DP-SGD
    at a target (it holds no data size).
    """
    p, c = cfg.privacy, cfg.client
    worst: tuple[float, JobSpend] | None = None
    falls = 0
    for k in range(1, MAX_BATCHES + 1):
        n = _fewest_examples(k, c.batch_size)
        z, q, steps = dp_sgd_round(p.dp_sgd_noise_multiplier, n, c.batch_size, c.epochs)
        spend = JobSpend(z, q, steps * cfg.run.rounds, p.accountant)
        eps = spend.epsilon(delta, accountant)
        if worst is None or eps > worst[0]:
            worst, falls = (eps, spend), 0
        elif (falls := falls + 1) == 2:
            break
    assert worst is not None
    return worst[1]


def _fewest_examples(k: int, batch_size: int) -> int:
    """The fewest examples ``n`` with ``max(1, round(n / B)) == k`` (``dp_sgd_schedule``)."""
    if k == 1:
        return 1
    n = max(1, int((k - 0.5) * batch_size) - 1)
    while round(n / batch_size) < k:
        n += 1
    return n


def stats_release(cfg: Config) -> Entry | None:
    """The statistics phase's Gaussian release of every row, ``(z, 1, 1)``; None without noise."""
    s = cfg.stats
    if not s.enabled or s.noise_multiplier == 0:
        return None
    return (float(s.noise_multiplier), 1.0, 1)


def job_releases(cfg: Config, delta: float, accountant: str) -> list[Release]:
    """Every DP release of ``cfg`` at a site, each with the most it can spend (see the table).

    Training is the client-level mechanism if the job has one, else DP-SGD's worst case.
    """
    out: list[Release] = []
    if (spend := job_spend(cfg)) is not None:
        out.append(Release("privacy.noise_multiplier", spend.noise_multiplier, spend.history))
    elif cfg.privacy.dp_sgd:
        worst = dp_sgd_worst_case(cfg, delta, accountant)
        out.append(Release("privacy.dp_sgd_noise_multiplier", worst.noise_multiplier,
                           worst.history))  # fmt: skip
    if (stats := stats_release(cfg)) is not None:
        out.append(Release("stats.noise_multiplier", stats[0], (stats,)))
    return out


def unprotected(cfg: Config) -> str | None:
    """What ``cfg`` releases of a site's data without DP (None: every release has noise)."""
    p, s = cfg.privacy, cfg.stats
    if p.mode == "none" and not p.dp_sgd:
        return "its training has no differential privacy (privacy.mode = 'none', dp_sgd = false)"
    if p.mode != "none" and p.noise_multiplier == 0:
        return "its training adds no noise (privacy.noise_multiplier = 0)"
    if p.mode == "none" and p.dp_sgd_noise_multiplier == 0:
        return "its DP-SGD adds no noise (privacy.dp_sgd_noise_multiplier = 0)"
    if s.enabled and s.noise_multiplier == 0:
        return (
            "its statistics phase releases this site's exact sums ([stats] enabled, "
            "stats.noise_multiplier = 0)"
        )
    return None
