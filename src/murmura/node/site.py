"""A site: ``murmura client --site site.toml`` trains on data that never leaves it.

The job config (``--config``) says what the data must look like (``[task.args.schema]``);
the site config, which stays at the site, says where that data is::

    [data]
    path = "data/plant-a"          # a file, or a folder of files (images: class folders)
    loader = "mysite.io:load"      # optional: the operator's own loader (local code)
    args = {}                      # its keyword arguments

    [site]
    name = "plant-a"               # how messages name the site (default: the node id)
    task = "mysite.model:make"     # optional: the operator's Task factory, given the data
    client = "mysite.client:make"  # optional: the operator's Client factory, given the data

    [policy]                       # optional: the data owner's rules for every job
    allowed_tasks = ["tabular"]
    max_rounds = 50
    lifetime_epsilon = 8.0         # this site's privacy budget over all jobs (its own ledger)

Relative paths are taken from the site config's folder. A job is checked against ``[policy]``
before the site reads any data (``murmura.federation.policy``). The data is read and checked against
the schema before the worker dials (``murmura.data.validate``). Data that fails the check
makes a ``RefusedSite``: it joins, trains nothing, and answers each round with the reason
(``SchemaError.public``: file name, column, row and problem, never a value), so the
coordinator lists the site and why while the job goes on with the others.

A coordinator whose job reads files (``[partition] kind = "files"``) builds the model and
strategy without any data (``coordinator_parts``): the sites hold it all.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from murmura.errors import ConfigError, MurmuraError, SchemaError
from murmura.node.worker import FitClient
from murmura.registry import resolve_user
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

if TYPE_CHECKING:
    from murmura.federation.policy import SitePolicy


class DataSection(BaseModel):
    """[data] of a site config: where the site's data is and how it is read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    loader: str | None = None
    args: dict[str, Any] = {}


class SiteSection(BaseModel):
    """[site] of a site config: its name, and the operator's own Task or Client factory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    task: str | None = None
    client: str | None = None


class SiteConfig(BaseModel):
    """A site config: the local side of a job, never sent anywhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: DataSection
    site: SiteSection = SiteSection()
    policy: dict[str, Any] = {}
    """[policy]: the data owner's rules for jobs (``murmura.federation.policy.SitePolicy``)."""


def load_site_config(path: Path | str) -> SiteConfig:
    """Read a site config; a relative ``data.path`` is taken from the config's folder."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
        site = SiteConfig.model_validate(raw)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{p}: {problems}") from None
    if site.site.task and site.site.client:
        raise ConfigError(f"{p}: [site] names a task and a client factory; name one")
    site_policy(site, p)  # refuse a bad [policy] before anything else
    data = site.data.model_copy(update={"path": str(p.parent / site.data.path)})
    return site.model_copy(update={"data": data})


def site_policy(site: SiteConfig, path: Path) -> SitePolicy:
    """The site's ``[policy]`` (no rule: accept every job); errors name the site file."""
    from murmura.federation.policy import SitePolicy

    return SitePolicy.from_table(site.policy, str(path))


class RefusedSite:
    """A site whose data failed the schema check: it answers every round with the reason."""

    def __init__(self, node_id: str, reason: str) -> None:
        self.node_id, self.reason = node_id, reason

    def fit(self, ins: FitIns) -> FitRes:
        """Refuse: the site takes no part."""
        raise SchemaRefused(self.reason)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Refuse: the site takes no part."""
        raise SchemaRefused(self.reason)


class SchemaRefused(MurmuraError):
    """The site's data does not fit the job's schema, so it takes no part in the job."""


def site_client(site: SiteConfig, cfg: Any, node: str) -> FitClient:
    """The client a site runs for job ``cfg`` on its own data (a ``RefusedSite`` if it fails)."""
    import logging

    from murmura.node.role_limits import check_role

    check_role("client", cfg)
    if cfg.partition.kind != "files":
        raise ConfigError(
            "murmura client --site: the job's data comes from sites, so its "
            f"[partition] kind must be 'files', got {cfg.partition.kind!r}"
        )
    name = site.site.name or node
    if cfg.stats.standardise and (site.site.task or site.site.client):
        raise ConfigError(
            "[stats] standardise = true scales the job's tabular task; the site's own [site] "
            "task or client would not apply it: drop it, or set stats.standardise = false"
        )
    try:
        client = _client(site, cfg, name)
    except SchemaError as exc:
        logging.getLogger(__name__).error("site %s refused: %s", name, exc)
        return RefusedSite(node, exc.public())
    if cfg.stats.standardise:  # its learner is made private when the scaling builds it
        return client
    return _private(cfg, client, name, own=site.site.client is not None)


def _private(cfg: Any, client: FitClient, name: str, *, own: bool) -> FitClient:
    """``[privacy]``'s local DP or DP-SGD around the site's learner, as around a simulated one.

    The noise stream is the site name's (CRC-32), so two sites never draw the same noise. The
    operator's own client is not murmura's learner, so neither can wrap it: refused.
    """
    import zlib

    from murmura.privacy.wiring import private_learners

    p = cfg.privacy
    if not (p.mode == "local" or p.dp_sgd):
        return client
    if own:
        raise ConfigError(
            "[privacy] local DP and DP-SGD wrap murmura's learner; the site's own [site] client "
            "cannot be wrapped, so its updates would leave unprotected: use [site] task instead"
        )
    index = zlib.crc32(name.encode()) & 0x7FFFFFFF
    (learner,), _ = private_learners(cfg, [client], first_index=index)  # type: ignore[list-item]
    return learner


def _client(site: SiteConfig, cfg: Any, name: str) -> FitClient:
    """Read and check the data, then build the configured, the operator's, or the job's client."""
    import torch

    from murmura.data.schema import schema_from_mapping
    from murmura.data.sources import open_sources
    from murmura.data.validate import read_local
    from murmura.tasks import load_task

    torch.set_num_threads(1)  # a small model trains fastest on one; sites often share a host
    d = site.data
    if "schema" not in cfg.task.args:
        raise ConfigError("murmura client --site: the job needs a [task.args.schema] table")
    if site.site.task is None and site.site.client is None:
        task: Any = load_task(cfg.task.name, **cfg.task.args)
        local = task.load(d.path, name, d.loader, d.args)
        if cfg.stats.standardise:
            return _standardised(cfg, task, local, name)
    else:
        schema = schema_from_mapping(cfg.task.args["schema"])
        local = read_local(schema, open_sources(d.path, schema.kind, d.loader, d.args), name)
        if site.site.client is not None:
            client: FitClient = _factory(site.site.client, "client")(local)
            return client
        task = _factory(str(site.site.task), "task")(local)
    return _learner(cfg, task, local)


def _standardised(cfg: Any, task: Any, local: Any, name: str) -> FitClient:
    """``[stats] standardise``: raw rows for the statistics, then the federation's scaling."""
    from dataclasses import replace

    from murmura.node.standardised_site import StandardisedSite
    from murmura.tasks import load_task

    def build(scaling: dict[str, list[float]]) -> FitClient:
        fitted: Any = load_task(cfg.task.name, **{**cfg.task.args, **scaling})
        rows = fitted.prepare(replace(local, x=local.x.copy()))  # as ``fitted.load`` would
        return _private(cfg, _learner(cfg, fitted, rows), name, own=False)

    return StandardisedSite(name, _learner(cfg, task, local), len(task.table.numeric), build)


def _learner(cfg: Any, task: Any, local: Any) -> FitClient:
    """The job's learner on ``local``: its model, ``[evaluation]``'s hold-out, local SGD."""
    import numpy as np
    import torch

    from murmura.client import FlatModel, LocalSGD, TorchClient
    from murmura.data.federated import ArrayFederatedDataset
    from murmura.data.holdout import hold_out

    test = (local.x[:0], local.y[:0])
    data = ArrayFederatedDataset(local.x, local.y, [np.arange(len(local))], *test)
    torch.manual_seed(cfg.run.seed)
    model = FlatModel(task.build_model())
    held = hold_out(data, cfg.evaluation.held_out(), cfg.run.seed)
    return TorchClient(0, held, task, model, LocalSGD(), seed=cfg.run.seed)


def _factory(target: str, what: str) -> Any:
    """The operator's ``"package.module:factory"`` (its code is installed at the site)."""
    try:
        return resolve_user(target)
    except (ImportError, AttributeError, MurmuraError) as exc:
        raise ConfigError(f"[site] {what} {target!r} cannot be loaded: {exc}") from None


def coordinator_parts(cfg: Any) -> tuple[Any, Vector, Any]:
    """Strategy, initial weights and model layout of a files job, built without any data.

    The model is initialised exactly as in simulation (``torch.manual_seed(run.seed)`` then
    ``build_model``). What needs the clients' data at the coordinator is refused.
    """
    import torch

    from murmura.client import FlatModel
    from murmura.compose.server import server_strategy
    from murmura.privacy.secure_wiring import apply_secagg
    from murmura.privacy.wiring import apply_privacy
    from murmura.tasks import load_task

    check_files_coordinator(cfg)
    e = cfg.evaluation
    task = load_task(cfg.task.name, **cfg.task.args)
    if cfg.simulation.threads:
        torch.set_num_threads(cfg.simulation.threads)
    torch.manual_seed(cfg.run.seed)
    model = FlatModel(task.build_model())
    fraction = e.fraction if e.federated else 0.0
    strategy, _ = apply_privacy(cfg, server_strategy(cfg, None, fraction_evaluate=fraction), [])
    strategy = apply_secagg(cfg, strategy, 0)
    return strategy, model.get(), model.layout


def check_files_coordinator(cfg: Any) -> None:
    """Refuse what a files job's coordinator cannot do without the sites' data or sizes.

    Called when it is built and, on a federation, when the job is submitted.
    """
    if cfg.evaluation.central:
        raise ConfigError(
            "[evaluation] central = true: the coordinator of a files job holds no data; "
            "set central = false and federated = true (the sites evaluate)"
        )
    if cfg.privacy.mode == "central":
        raise ConfigError(
            "[privacy] mode = 'central' needs every client's size at the coordinator, which "
            "a files job's coordinator does not hold"
        )
    p = cfg.privacy
    if p.dp_sgd and p.mode == "none" and p.target_epsilon is not None:
        raise ConfigError(
            "[privacy] target_epsilon with dp_sgd alone stops a run by its clients' sizes, "
            "which a files job's coordinator does not hold (each site charges its own DP-SGD "
            "epsilon to its ledger): drop target_epsilon"
        )
    if cfg.secagg.enabled and cfg.secagg.max_weight is None:
        raise ConfigError("[secagg] max_weight must be set for a files job (no sizes are known)")
