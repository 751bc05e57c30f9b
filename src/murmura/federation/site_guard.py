"""A site's side of one job: check it against the policy, then charge the ledger on release.

``admit`` runs before the job touches any data and raises ``JobRefused`` with the site's
reason. The budget is charged as the site releases (``ChargedClient``), before the release
leaves it, under the coordinator's run id (the table in ``murmura.federation.spend``): a
client-level job whole before its first training round, a DP-SGD job round by round with the
round's own sample rate and steps on the site's data, the statistics phase when the site
answers it. A site restarted mid-job rejoins the same run and is not charged twice for the
same release, and the limits are checked again in the charge's own transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from murmura.errors import InstructionRejected
from murmura.federation.budget import JOB, STATS, SiteBudget
from murmura.federation.policy import JobRefused, SitePolicy, check_job
from murmura.federation.spend import dp_sgd_round, job_spend, stats_release
from murmura.privacy.accountant import Entry
from murmura.types import FitIns, FitRes

if TYPE_CHECKING:
    from murmura.config import Config
    from murmura.learner import LocalLearner

Charge = Callable[[str, str, tuple[Entry, ...]], None]
"""Charges (job id, part, mechanism) to the site's ledger, idempotent per job and part."""


def free(job_id: str, part: str, history: tuple[Entry, ...]) -> None:
    """The charge of a site that keeps no budget: nothing."""


@dataclass(frozen=True, slots=True)
class Admitted:
    """A job the site's policy accepted, and the ledger that pays for it (None: no DP)."""

    policy: SitePolicy
    job: Config
    budget: SiteBudget | None

    def charge(self, job_id: str, part: str, history: tuple[Entry, ...]) -> None:
        """Charge one part of the job to the ledger, within the policy's limits."""
        if self.budget is not None:
            self.budget.charge_part(
                job_id,
                part,
                history,
                self.job.privacy.accountant,
                limit=self.policy.lifetime_epsilon,
                job_limit=self.policy.max_epsilon,
            )


def has_dp(job: Config) -> bool:
    """Whether any part of ``job`` releases a site's data with DP noise (cheap: no accountant)."""
    p = job.privacy
    return p.mode != "none" or p.dp_sgd or stats_release(job) is not None


def open_budget(policy: SitePolicy, site_file: Path) -> SiteBudget:
    """The site's ledger, composed with the policy's accountant at its delta."""
    path = policy.ledger_path(site_file)
    return SiteBudget.open(path, accountant=policy.accountant, delta=policy.delta)


def admit(policy: SitePolicy, site_file: Path, job: Config, submitter: str | None) -> Admitted:
    """The job, accepted by ``policy``; raises ``JobRefused`` with the reason otherwise."""
    dp = has_dp(job)
    budget = open_budget(policy, site_file) if dp or policy.lifetime_epsilon is not None else None
    reason = check_job(policy, job, submitter, budget)
    if reason is not None:
        if budget is not None:
            budget.close()
        raise JobRefused(f"{site_file}: the site refuses the job: {reason}")
    if budget is not None and not dp:
        budget.close()
        budget = None
    return Admitted(policy, job, budget)


def site_learner(client: Any) -> LocalLearner | None:
    """The murmura learner under a site's wrappers: its rows, size and hyper-parameters.

    Local DP and DP-SGD wrap it; a ``[stats] standardise`` site builds its learner on the
    first round from the same rows as its raw learner (same size and hyper-parameters). None
    for the operator's own ``[site] client``.
    """
    from murmura.client import TorchClient
    from murmura.node.standardised_site import StandardisedSite
    from murmura.privacy.dp_client import DPSGDClient
    from murmura.privacy.local import LocalDPClient

    if isinstance(client, StandardisedSite):
        return site_learner(client.raw)
    if isinstance(client, DPSGDClient | LocalDPClient):
        return site_learner(client.inner)
    return client if isinstance(client, TorchClient) else None


def release_digest(ins: FitIns) -> str:
    """What identifies a round's release: its round, weights and config (SHA-256, short).

    A site's training is deterministic given these (its random stream is seeded by the run
    and the round), so the same instruction again releases nothing new.
    """
    h = hashlib.sha256(str(ins.round).encode())
    h.update(np.ascontiguousarray(np.asarray(ins.weights, dtype=np.float32)).tobytes())
    h.update(json.dumps(dict(ins.config), sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


class ChargedClient:
    """A site's client that charges each release to the ledger before it leaves the site.

    ``charge`` is ``Admitted.charge`` (or ``free``). A client-level job is charged whole
    before the first round the site trains (a site that joined after the last round released
    nothing and is charged nothing); a DP-SGD job each round, ``(z, B / n, steps)`` of the
    round as ``learner`` trains it, with the batch size and epochs the instruction sets; the
    statistics phase when ``local_data`` (the learner's rows, under any DP wrapper) is read
    for it. Everything else is the wrapped client's.
    """

    def __init__(
        self,
        inner: Any,
        charge: Charge,
        job_id: Callable[[], str],
        job: Config,
        learner: LocalLearner | None = None,
    ) -> None:
        self.inner, self.charge, self.job_id, self.job = inner, charge, job_id, job
        self.whole = job_spend(job)
        self.learner = learner
        if self.whole is None and job.privacy.dp_sgd and learner is None:
            raise ValueError("a DP-SGD job is charged round by round: pass the site's learner")
        self._charged: str | None = None

    def fit(self, ins: FitIns) -> FitRes:
        """Charge what this round releases, then train."""
        job_id = self.job_id()
        if self.whole is not None:
            if self._charged != job_id:
                self.charge(job_id, JOB, self.whole.history)
                self._charged = job_id
        elif self.job.privacy.dp_sgd:
            self.charge(job_id, f"round {ins.round} {release_digest(ins)}", (self._round(ins),))
        res: FitRes = self.inner.fit(ins)
        return res

    def _round(self, ins: FitIns) -> Entry:
        from murmura.client import with_overrides

        assert self.learner is not None
        learner, p = self.learner, self.job.privacy
        hp = with_overrides(learner.hp, ins.config)
        n, steps = learner.num_examples, learner.local_steps
        return dp_sgd_round(p.dp_sgd_noise_multiplier, n, hp.batch_size, hp.epochs, steps)

    def local_data(self) -> Any:
        """The rows the statistics phase summarises, once its release is charged."""
        if not self.job.stats.enabled:
            raise InstructionRejected(
                "the job this site accepted has no statistics phase ([stats] enabled = false)"
            )
        source = self.inner if self.learner is None else self.learner  # under local DP too
        local_data = getattr(source, "local_data", None)
        if not callable(local_data):
            raise InstructionRejected("this worker's client has no local_data() to summarise")
        if (entry := stats_release(self.job)) is not None:
            self.charge(self.job_id(), STATS, (entry,))
        return local_data()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
