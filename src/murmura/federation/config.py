"""The federation config (``[server]`` + ``[federation]``) and a job's config (a run config).

A federation config holds the coordinator's ``[server]`` table (where it listens, its
certificate, who may join, its state dir) and a ``[federation]`` table (how jobs are run).
A job is an ordinary run config; its ``[server]`` table may set only how its rounds are
timed (``JOB_SERVER_KEYS``): where the coordinator listens, its keys and its state belong
to the federation, so a job that names them is refused. A tree job names its standing edges
and their sites in ``[edge.NAME]`` tables (``murmura.federation.tree``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from murmura.errors import ConfigError
from murmura.federation.job_guard import check_job_names
from murmura.federation.tree import JobTree, parse_tree
from murmura.node.deploy import ServerSection
from murmura.transport.registry import DEFAULT as DEFAULT_TRANSPORT

JOB_SERVER_KEYS = frozenset(
    {
        "round_timeout",
        "min_nodes",
        "join_timeout",
        "rejoin_timeout",
        "keep_last",
        "checkpoint_every",
        "heartbeat",
        "lost_after",
        "secagg_stage_timeout",
    }
)
"""``[server]`` keys a job may set: the timing of its own rounds."""
MAX_JOB_BYTES = 256 * 1024
"""Largest job config accepted (TOML text)."""


class FederationSection(BaseModel):
    """[federation] (``murmura server`` of a standing federation): how jobs are run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent_jobs: int = Field(1, ge=1)
    """Jobs run at once; the others wait in the queue, oldest first."""
    job_timeout: float = Field(3600.0, gt=0)
    """Seconds a job may run; then it ends ``failed`` (timeout) and the next one starts."""
    answer_timeout: float = Field(30.0, gt=0)
    """Seconds the connected sites have to accept or refuse a job offered to them."""
    job_host: str | None = None
    """Where each job's rounds are served (default: ``[server] host``), on a port of its own."""
    admins: list[str] | None = None
    """Admin certificate names allowed to use the job API; None: every admin certificate."""
    max_requests_per_minute: float = Field(60.0, gt=0)
    """Submit, Abort and Download calls one admin may make per minute (RESOURCE_EXHAUSTED after)."""
    request_burst: int = Field(10, ge=1)
    """Of those, how many may come at once (a token bucket this deep, refilled at that rate)."""


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """A loaded federation config: the coordinator's ``[server]`` and ``[federation]``."""

    server: ServerSection
    federation: FederationSection

    @property
    def state_dir(self) -> Path:
        """The federation's state dir: the job queue, the ledger, a folder per job."""
        return Path(self.server.state_dir)


def is_federation_config(path: Path | str) -> bool:
    """Whether the TOML file at ``path`` has a ``[federation]`` table (unreadable: False)."""
    try:
        return "federation" in tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_federation(path: Path | str) -> FederationConfig:
    """Read a federation config; any table besides ``[server]`` and ``[federation]`` is refused."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    other = sorted(set(data) - {"server", "federation"})
    if other:
        raise ConfigError(
            f"{path}: a federation config has only [server] and [federation]; "
            f"{', '.join(other)} belong in a job (murmura job submit)"
        )
    try:
        server = ServerSection(**data.get("server", {}))
    except ValidationError as exc:
        raise ConfigError(f"{path} [server]: {_problems(exc)}") from None
    if server.transport != DEFAULT_TRANSPORT:  # its service and its sites speak gRPC
        raise ConfigError(
            f"{path} [server] transport = {server.transport!r}: the federation's service and "
            "its sites run over gRPC only"
        )
    try:
        fed = FederationSection(**data["federation"])
    except ValidationError as exc:
        raise ConfigError(f"{path} [federation]: {_problems(exc)}") from None
    return FederationConfig(server, fed)


def parse_job(text: str, where: str = "job") -> tuple[Any, dict[str, Any]]:
    """A job's run config and its ``[server]`` timing keys, from its TOML text."""
    cfg, timing, _ = parse_job_tree(text, where)
    return cfg, timing


def parse_job_tree(text: str, where: str = "job") -> tuple[Any, dict[str, Any], JobTree | None]:
    """A job's run config, its ``[server]`` timing keys and its tree (``[edge.NAME]``).

    A job that names code to import is refused (``job_guard``): the coordinator builds the
    job's model and strategy from it too. A tree job's edge tables are checked (``tree``).
    """
    from murmura.config import config_from_dict

    if len(text.encode()) > MAX_JOB_BYTES:
        raise ConfigError(f"{where}: the job config is over {MAX_JOB_BYTES // 1024} KiB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    check_job_names(data)  # before anything is built from it, here or at a site
    timing = data.pop("server", {})
    if not isinstance(timing, dict):
        raise ConfigError(f"{where}: [server] must be a table")
    refused = sorted(set(timing) - JOB_SERVER_KEYS)
    if refused:
        raise ConfigError(
            f"{where} [server]: {', '.join(refused)} belong to the federation, not to a job; "
            f"a job may set {', '.join(sorted(JOB_SERVER_KEYS))}"
        )
    edges = data.pop("edge", None)
    cfg = config_from_dict(data, where)
    tree = parse_tree(edges, cfg, where)
    check_job_roles(cfg, tree, where)
    return cfg, timing, tree


def check_job_roles(cfg: Any, tree: JobTree | None, where: str) -> None:
    """Refuse at submission a setting that a role of the job would refuse when it starts.

    The job's coordinator runs as ``murmura server``, its sites as ``murmura client`` and a
    tree's edges as ``murmura edge``; a setting one of them does not apply would otherwise
    be accepted into the queue and fail the job only when that role builds it. A files
    job's coordinator holds no data, which rules out what needs it (``site``).
    """
    from murmura.node.role_limits import check_role
    from murmura.node.site import check_files_coordinator

    try:
        for role in ("server", "client", *(("edge",) if tree is not None else ())):
            check_role(role, cfg)
        if cfg.partition.kind == "files":
            check_files_coordinator(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def job_server(fed: FederationConfig, timing: dict[str, Any], state_dir: Path) -> ServerSection:
    """The ``[server]`` of one job's coordinator: the federation's, its timing, its own dir.

    Its rounds are served on a port of their own (chosen at start), and its ``/metrics``
    is not served (the federation's port would be taken twice).
    """
    host = fed.federation.job_host or fed.server.host
    base = fed.server.model_dump()
    base.update(host=host, port=0, state_dir=str(state_dir), metrics_port=0, **timing)
    try:
        return ServerSection(**base)
    except ValidationError as exc:
        raise ConfigError(f"job [server]: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
