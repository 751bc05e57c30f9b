"""A site's side of one job: check it against the policy, then charge the ledger on release.

``admit`` runs before the job touches any data and raises ``JobRefused`` with the site's
reason. The budget is charged when the site first trains for the job (``ChargedClient``),
under the coordinator's run id: a site restarted mid-job rejoins the same run and is not
charged twice, and the lifetime limit is checked again in the charge's own transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from murmura.federation.budget import SiteBudget
from murmura.federation.policy import JobRefused, SitePolicy, check_job
from murmura.federation.spend import job_spend
from murmura.types import FitIns, FitRes

if TYPE_CHECKING:
    from murmura.config import Config


@dataclass(frozen=True, slots=True)
class Admitted:
    """A job the site's policy accepted, and the ledger that pays for it (None: no DP)."""

    policy: SitePolicy
    job: Config
    budget: SiteBudget | None

    def charge(self, job_id: str) -> None:
        """Charge the job's spend to the site's ledger (nothing for a job without DP)."""
        if self.budget is not None:
            self.budget.charge(job_id, self.job, limit=self.policy.lifetime_epsilon)


def open_budget(policy: SitePolicy, site_file: Path) -> SiteBudget:
    """The site's ledger, composed with the policy's accountant at its delta."""
    path = policy.ledger_path(site_file)
    return SiteBudget.open(path, accountant=policy.accountant, delta=policy.delta)


def admit(policy: SitePolicy, site_file: Path, job: Config, submitter: str | None) -> Admitted:
    """The job, accepted by ``policy``; raises ``JobRefused`` with the reason otherwise."""
    dp = job_spend(job) is not None
    budget = open_budget(policy, site_file) if dp or policy.lifetime_epsilon is not None else None
    reason = check_job(policy, job, submitter, budget)
    if reason is not None:
        if budget is not None:
            budget.close()
        raise JobRefused(f"{site_file}: the site refuses the job: {reason}")
    return Admitted(policy, job, budget if dp else None)


class ChargedClient:
    """A site's client that charges the job to the ledger before its first training round.

    ``charge`` is ``Admitted.charge`` (or a standing site's ``Charge``): a site that accepted
    a job but never trained for it (it joined after the last round) has released nothing and
    is charged nothing. Everything but ``fit`` is the wrapped client's.
    """

    def __init__(
        self, inner: Any, charge: Callable[[str], None], job_id: Callable[[], str]
    ) -> None:
        self.inner, self.charge, self.job_id = inner, charge, job_id
        self._charged: str | None = None

    def fit(self, ins: FitIns) -> FitRes:
        """Charge the job (once per job id), then train."""
        job_id = self.job_id()
        if self._charged != job_id:
            self.charge(job_id)
            self._charged = job_id
        res: FitRes = self.inner.fit(ins)
        return res

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
