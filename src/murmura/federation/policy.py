"""A site's policy: the data owner's rules for which jobs may run on its data.

Read from the ``[policy]`` table of the site's own config (``murmura client --site``), which
never leaves the site. ``check_job`` decides before the job touches any data and answers with
the reason, one line naming the policy key, or None. The job is never trusted for a number it
could state about itself: its epsilon is computed with the accountant from its ``[privacy]``
settings (``murmura.federation.spend``), its model size by building its model without data,
and the lifetime budget from the site's own ledger (``murmura.federation.budget``).

The checks run cheapest first; a job's task code (a built-in task, or installed code named
``"package.module:factory"``) is only loaded to name or count its model once the job's task
is allowed.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from murmura.errors import ConfigError, MurmuraError
from murmura.federation.spend import Release, composed_epsilon, job_releases, unprotected
from murmura.privacy.accountant import AccountantName

if TYPE_CHECKING:
    from murmura.config import Config
    from murmura.federation.budget import SiteBudget


class JobRefused(MurmuraError):
    """The site's policy refuses the job; the message is the site's reason."""


class _PolicyTable(BaseModel):
    """``[policy]`` as written in a site config (pydantic only at the file boundary)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    allowed_tasks: list[str] | None = None
    allowed_models: list[str] | None = None
    allowed_submitters: list[str] | None = None
    max_rounds: int | None = Field(None, ge=1)
    max_local_epochs: int | None = Field(None, ge=1)
    max_model_params: int | None = Field(None, ge=1)
    require_secure_aggregation: bool = False
    require_dp: bool = False
    min_noise_multiplier: float | None = Field(None, gt=0)
    max_epsilon: float | None = Field(None, gt=0)
    lifetime_epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    accountant: AccountantName = "rdp"
    ledger: str = Field("privacy-ledger.db", min_length=1)


@dataclass(frozen=True, slots=True)
class SitePolicy:
    """The data owner's rules (``[policy]``); unset limits do not apply.

    ``max_epsilon`` (one job) and ``lifetime_epsilon`` (every job this site has taken, composed
    from its ledger) are epsilons at ``delta``, computed with ``accountant`` over every release
    of the job; ``min_noise_multiplier`` applies to each release's noise. Any of
    ``require_dp``, ``min_noise_multiplier``, ``max_epsilon`` and ``lifetime_epsilon`` refuses
    a job that releases anything of the site's data without DP noise (``spend.unprotected``):
    its spend is unbounded.
    """

    allowed_tasks: tuple[str, ...] | None = None
    allowed_models: tuple[str, ...] | None = None
    allowed_submitters: tuple[str, ...] | None = None
    max_rounds: int | None = None
    max_local_epochs: int | None = None
    max_model_params: int | None = None
    require_secure_aggregation: bool = False
    require_dp: bool = False
    min_noise_multiplier: float | None = None
    max_epsilon: float | None = None
    lifetime_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"
    ledger: str = "privacy-ledger.db"
    """The site's privacy ledger (SQLite), relative to the site config's folder."""

    @classmethod
    def from_table(cls, table: Mapping[str, Any], site_name: str) -> SitePolicy:
        """The policy of a ``[policy]`` table; errors name ``site_name`` (the site file) and key."""
        try:
            t = _PolicyTable.model_validate(dict(table))
        except ValidationError as exc:
            problems = []
            for e in exc.errors():
                key = ".".join(str(x) for x in e["loc"]) or "(table)"
                msg = e["msg"]
                if e["type"] == "extra_forbidden":
                    msg = f"unknown key; allowed keys: {', '.join(_PolicyTable.model_fields)}"
                else:
                    msg = f"{msg} (got {e.get('input')!r})"
                problems.append(f"[policy] {key}: {msg}")
            raise ConfigError(f"{site_name}: {'; '.join(problems)}") from None

        def names(v: list[str] | None) -> tuple[str, ...] | None:
            return None if v is None else tuple(v)

        fields = t.model_dump()
        for key in ("allowed_tasks", "allowed_models", "allowed_submitters"):
            fields[key] = names(fields[key])
        return cls(**fields)

    @property
    def wants_dp(self) -> bool:
        """Whether every release of a job must have DP noise for it to be accepted."""
        limits = (self.min_noise_multiplier, self.max_epsilon, self.lifetime_epsilon)
        return self.require_dp or any(v is not None for v in limits)

    def ledger_path(self, site_file: Path) -> Path:
        """Where the site's privacy ledger is (``ledger`` from the site config's folder)."""
        return site_file.parent / self.ledger


def check_job(
    policy: SitePolicy, job: Config, submitter: str | None, budget: SiteBudget | None
) -> str | None:
    """None if ``policy`` accepts ``job`` from ``submitter``, else the site's reason (one line).

    ``submitter`` is the admin who submitted the job; None for a job the site's own operator
    gave on the command line (``murmura client --site --config``), which
    ``allowed_submitters`` does not restrict. ``budget`` is the site's ledger; a policy with
    ``lifetime_epsilon`` needs it.
    """
    for check in (_people, _shape):
        if (reason := check(policy, job, submitter)) is not None:
            return reason
    if policy.wants_dp:
        if (reason := _privacy(policy, job)) is not None:
            return reason
        releases = job_releases(job, policy.delta, policy.accountant)
        if (reason := _noise(policy, releases)) is not None:
            return reason
        if (reason := _lifetime(policy, releases, budget)) is not None:
            return reason
    return _model(policy, job)


def _people(policy: SitePolicy, job: Config, submitter: str | None) -> str | None:
    allowed = policy.allowed_submitters
    if submitter is not None and allowed is not None and submitter not in allowed:
        return f"policy.allowed_submitters: {submitter!r} is not one of {list(allowed)}"
    if policy.allowed_tasks is not None and job.task.name not in policy.allowed_tasks:
        allowed = policy.allowed_tasks
        return f"policy.allowed_tasks: task {job.task.name!r} is not one of {list(allowed)}"
    return None


def _shape(policy: SitePolicy, job: Config, submitter: str | None) -> str | None:
    if policy.max_rounds is not None and job.run.rounds > policy.max_rounds:
        return f"policy.max_rounds = {policy.max_rounds}: the job asks for {job.run.rounds} rounds"
    epochs = job.client.epochs
    if policy.max_local_epochs is not None and epochs > policy.max_local_epochs:
        return f"policy.max_local_epochs = {policy.max_local_epochs}: the job asks for {epochs}"
    if policy.require_secure_aggregation and not job.secagg.enabled:
        return "policy.require_secure_aggregation: the job has secagg.enabled = false"
    return None


def _privacy(policy: SitePolicy, job: Config) -> str | None:
    """The site's reason if the job releases anything of its data without DP noise."""
    what = unprotected(job)
    if what is None:
        return None
    key = next(
        k
        for k in ("require_dp", "min_noise_multiplier", "max_epsilon", "lifetime_epsilon")
        if getattr(policy, k) not in (None, False)
    )
    return f"policy.{key}: the site requires differential privacy, but {what}"


def _mechanisms(releases: list[Release]) -> str:
    return "; ".join(
        f"{r.key} {z:.4g}, q {q:g}, {n} steps" for r in releases for z, q, n in r.history
    )


def _noise(policy: SitePolicy, releases: list[Release]) -> str | None:
    least = policy.min_noise_multiplier
    for r in releases:
        if least is not None and (z := r.noise_multiplier) < least:
            return f"policy.min_noise_multiplier = {least:g}: the job's {r.key} is {z:.4g}"
    if policy.max_epsilon is not None:
        eps = composed_epsilon([r.history for r in releases], policy.delta, policy.accountant)
        if eps > policy.max_epsilon:
            return (
                f"policy.max_epsilon = {policy.max_epsilon:g}: the job spends epsilon {eps:.4g} "
                f"at delta {policy.delta:g} ({_mechanisms(releases)})"
            )
    return None


def _lifetime(policy: SitePolicy, releases: list[Release], budget: SiteBudget | None) -> str | None:
    if policy.lifetime_epsilon is None:
        return None
    if budget is None:
        raise ValueError("a policy with lifetime_epsilon is checked against the site's budget")
    spent, _ = budget.spent()
    after = budget.epsilon_after(e for r in releases for e in r.history)
    if after > policy.lifetime_epsilon:
        return (
            f"policy.lifetime_epsilon = {policy.lifetime_epsilon:g}: this site has spent "
            f"epsilon {spent:.4g} and the job would take it to {after:.4g} "
            f"(delta {budget.delta:g}; {_mechanisms(releases)})"
        )
    return None


def _model(policy: SitePolicy, job: Config) -> str | None:
    key = "allowed_models"
    models, most = policy.allowed_models, policy.max_model_params
    try:
        if models is not None and (name := model_name(job)) not in models:
            return f"policy.allowed_models: model {name!r} is not one of {list(models)}"
        key = "max_model_params"
        if most is not None and (n := model_params(job)) > most:
            return f"policy.max_model_params = {most}: the job's model has {n} parameters"
    except (MurmuraError, ValueError, TypeError, ImportError) as exc:
        return f"policy.{key}: the job's model cannot be built to check it ({exc})"
    return None


def model_name(job: Config) -> str:
    """The job's model: ``task.args.model``, else the task's default ``model``, else the task."""
    if "model" in job.task.args:
        return str(job.task.args["model"])
    factory = _task_factory(job.task.name)
    param = inspect.signature(factory).parameters.get("model")
    if param is not None and param.default is not inspect.Parameter.empty:
        return str(param.default)
    return job.task.name


def _task_factory(name: str) -> Any:
    from murmura.registry import resolve_user
    from murmura.tasks import TASKS

    try:
        return resolve_user(name) if ":" in name else TASKS.get(name)
    except (ImportError, AttributeError, MurmuraError) as exc:
        raise ConfigError(f"task {name!r} cannot be loaded: {exc}") from None


def model_params(job: Config) -> int:
    """Parameters of the job's model, built by its task without any data."""
    from murmura.tasks import load_task

    model = load_task(job.task.name, **job.task.args).build_model()
    return int(sum(p.numel() for p in model.parameters()))
