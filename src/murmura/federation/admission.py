"""A site's admission of a job: its ``[policy]`` and privacy budget, before any data is read.

The rules and the budget are ``murmura.federation.policy`` and ``murmura.federation.budget``
(``site_guard.admit``): a job the policy refuses gets the site's reason; an accepted job
with differential privacy is charged to the site's ledger as the site releases its data,
under the federation's job id (idempotent: a site restarted mid-job that accepts the job
again is not charged twice for the same release).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from murmura.errors import MurmuraError
from murmura.federation.site_guard import Charge
from murmura.federation.site_guard import admit as guard_admit
from murmura.federation.site_loop import Admission
from murmura.node.site import site_policy


def site_admission(site_file: Path, site_cfg: Any) -> Admission:
    """The admission of the site configured by ``site_file`` (no ``[policy]``: every job)."""
    policy = site_policy(site_cfg, site_file)

    def admit(cfg: Any, submitter: str) -> str | Charge:
        try:
            admitted = guard_admit(policy, site_file, cfg, submitter)
        except MurmuraError as exc:  # JobRefused: the site's reason
            return str(exc)
        charge: Charge = admitted.charge  # BudgetExceeded when the ledger says no
        return charge

    return admit
