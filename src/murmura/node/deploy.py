"""Building deployed nodes from config: the ``[server]`` table and a worker's local client.

A deployment config is a run config (``murmura.config``) plus a ``[server]`` table that only
the coordinator reads. Workers load the same task and partition locally, so their data never
travels; the coordinator sends the ``[client]`` hyper-parameters with every round.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from murmura.analytics.federation import StatsPlan, plan_from_config
from murmura.analytics.fit_scaling import deployed_scaling
from murmura.compress.uplink import uplink_codec
from murmura.errors import ConfigError, RegistryError
from murmura.node.coordinator import Coordinator, CoordinatorSettings
from murmura.node.downlink import downlink_plan
from murmura.node.role_limits import check_role
from murmura.node.worker import FitClient
from murmura.ops.metrics_http import MetricsEndpoint
from murmura.transport import keys
from murmura.transport.grpc_server import ServerOptions
from murmura.transport.registry import DEFAULT as DEFAULT_TRANSPORT
from murmura.transport.registry import TRANSPORTS


class ServerSection(BaseModel):
    """[server] (``murmura server`` only): where it listens, who may join, timing, ``/metrics``.

    ``metrics_port`` 0 serves no metrics; a non-loopback ``metrics_host`` needs
    ``metrics_allow_remote`` (plain HTTP, no authentication).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    transport: str = DEFAULT_TRANSPORT
    """How the coordinator and its workers talk (``murmura.transport.registry``): "grpc"."""
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    cert: str | None = None
    key: str | None = None
    ca: str | None = None
    allowlist: list[str] | None = None
    require_signed_updates: bool = True
    """Refuse an update its worker did not sign with its certificate's key (TLS runs only)."""
    state_dir: str = "runs/coordinator"
    round_timeout: float = Field(60.0, gt=0)
    min_nodes: int = Field(1, ge=1)
    join_timeout: float = Field(120.0, ge=0)
    rejoin_timeout: float = Field(600.0, ge=0)
    """Seconds a round waits for enough live workers to sample; then the server exits 2 with
    the run unfinished (started again, it resumes). 0: stop at once."""
    keep_last: int = Field(3, ge=0)
    """Round checkpoints kept in the run's ``checkpoints/`` (the newest, plus round 0, the
    initial model); older ones are deleted once a newer round is recorded. 0: keep all."""
    checkpoint_every: int = Field(1, ge=1)
    """Checkpoint every k-th round (and the last); a restart runs the rounds since the newest
    checkpoint again, so k > 1 is refused for a run with differential privacy."""
    heartbeat: float = Field(1.0, gt=0)
    lost_after: float = Field(5.0, gt=0)
    max_update_mb: float = Field(2048.0, gt=0)
    max_secagg_mb: float | None = Field(None, gt=0)
    """Largest secure aggregation answer; unset: the round's masked-input size plus a margin."""
    chunk_kb: int = Field(1024, ge=1, le=3072)
    max_concurrent_uploads: int = Field(4, ge=1)
    """Updates received at once (each holds a full-size buffer); later pushes wait their turn."""
    stream_window_kb: int = Field(2048, ge=64, le=65536)
    """HTTP/2 window of each stream: what a waiting push holds; one upload's rate is at most
    a window per round trip (2 MiB at 50 ms: 40 MB/s), so raise it for distant workers."""
    secagg_stage_timeout: float = Field(30.0, gt=0)
    """Deadline of each secure aggregation step after advertise (``[secagg] enabled``)."""
    metrics_host: str = "127.0.0.1"
    """Where Prometheus ``/metrics`` is served; a non-loopback host needs metrics_allow_remote."""
    metrics_port: int = Field(0, ge=0, le=65535)
    """Port of ``/metrics``; 0: not served."""
    metrics_allow_remote: bool = False
    """Serve ``/metrics`` (plain HTTP, no authentication) on a non-loopback host."""

    @field_validator("transport")
    @classmethod
    def _known_transport(cls, name: str) -> str:
        try:
            TRANSPORTS.check(name)
        except RegistryError as exc:
            raise ValueError(str(exc)) from None
        return name


def split_config(path: Path | str, overrides: list[str] | None = None) -> tuple[Any, ServerSection]:
    """Load a deployment TOML: the run ``Config`` and the ``[server]`` section."""
    from murmura.config import apply_overrides, config_from_dict

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    data = apply_overrides(data, overrides or [])
    server_data = data.pop("server", {})
    try:
        server = ServerSection(**server_data)
    except ValidationError as exc:
        raise ConfigError(f"{path} [server]: {exc}") from None
    return config_from_dict(data, str(path)), server


def server_options(s: ServerSection, insecure: bool) -> ServerOptions:
    """Transport options from the ``[server]`` section; TLS unless ``insecure``."""
    creds = None
    if not insecure:
        if not (s.cert and s.key and s.ca):
            raise ConfigError(
                "[server] needs cert, key and ca (or run with --insecure on loopback)"
            )
        creds = keys.Credentials.load(s.cert, s.key, s.ca)
    return ServerOptions(
        host=s.host,
        port=s.port,
        credentials=creds,
        insecure=insecure,
        allowlist=frozenset(s.allowlist) if s.allowlist is not None else None,
        max_update_bytes=int(s.max_update_mb * (1 << 20)),
        max_secagg_bytes=None if s.max_secagg_mb is None else int(s.max_secagg_mb * (1 << 20)),
        chunk_size=s.chunk_kb * 1024,
        require_signed_updates=s.require_signed_updates,
        max_concurrent_uploads=s.max_concurrent_uploads,
        stream_window_bytes=s.stream_window_kb * 1024,
    )


def metrics_endpoint(s: ServerSection) -> MetricsEndpoint | None:
    """The ``/metrics`` endpoint of the ``[server]`` section; None when ``metrics_port`` is 0."""
    if s.metrics_port == 0:
        return None
    return MetricsEndpoint(s.metrics_host, s.metrics_port, s.metrics_allow_remote)


def build_coordinator(
    cfg: Any,
    s: ServerSection,
    insecure: bool = False,
    new_run: bool = False,
    run_id: str | None = None,
) -> Coordinator:
    """A coordinator for run config ``cfg``: same model init and strategy as the simulation.

    With ``[topology] kind = "tree"`` it is the tree's root, its nodes the ``murmura edge``
    aggregators, and it runs the simulated tree's root strategy (FedAvg, or central DP's
    release of the edges' sums).

    ``new_run``/``run_id``: start a new run / resume that run (``StateStore.open_run``).
    """
    from murmura.compose.kinds import topology_kind

    kind = topology_kind(cfg.topology.kind)
    if kind.server is None:
        raise ConfigError(
            f"murmura server runs a star or a tree's root; the config has {cfg.topology.kind!r}"
        )
    check_role("server", cfg)
    if cfg.topology.kind != "star" and s.transport != DEFAULT_TRANSPORT:
        raise ConfigError(
            f"[server] transport = {s.transport!r} with [topology] kind = "
            f"{cfg.topology.kind!r}: a tree's edges reach their parent over gRPC only"
        )
    if s.checkpoint_every > 1 and cfg.privacy.mode != "none":
        raise ConfigError(
            f"[server] checkpoint_every = {s.checkpoint_every} with [privacy] mode = "
            f"{cfg.privacy.mode!r}: a restart would run the rounds since the last checkpoint "
            f"again and spend their privacy budget twice; use checkpoint_every = 1"
        )
    metrics = metrics_endpoint(s)  # a refused metrics host fails before the data is built
    if cfg.partition.kind == "files":  # the sites hold the data: none is read here
        from murmura.node.site import coordinator_parts

        strategy, weights, layout = coordinator_parts(cfg)
        statistics = deployed_statistics(cfg, lambda: _schema_classes(cfg))
    else:
        # the simulated server's own builder; its clients' learners are the workers' to build
        parts = kind.server(cfg)
        w = parts.workload
        strategy, weights, layout = parts.strategy, w.model.get(), w.model.layout
        if cfg.attack.kind != "none":  # the workers attack; an omniscient kind cannot
            from murmura.attacks.wiring import deployed_attack
            from murmura.node.role_limits import COMMANDS

            deployed_attack(cfg, w.data, COMMANDS["server"])
        statistics = deployed_statistics(cfg, lambda: classes_of(w.data))
    settings = CoordinatorSettings(
        state_dir=Path(s.state_dir),
        rounds=cfg.run.rounds,
        run_name=cfg.run.name,
        round_timeout_s=s.round_timeout,
        min_nodes=s.min_nodes,
        join_timeout_s=s.join_timeout,
        rejoin_timeout_s=s.rejoin_timeout,
        heartbeat_s=s.heartbeat,
        lost_after_s=s.lost_after,
        evaluate_every=cfg.evaluation.every,
        client_config=cfg.client.model_dump(),
        config=cfg.model_dump(mode="json"),
        secagg_stage_timeout_s=s.secagg_stage_timeout,
        metrics=metrics,
        max_weight_share=cfg.strategy.max_weight_share,
        keep_last=s.keep_last,
        checkpoint_every=s.checkpoint_every,
        new_run=new_run,
        resume_run_id=run_id,
        statistics=statistics,
        standardise=partial(deployed_scaling, cfg) if cfg.stats.standardise else None,
        # [compression] downlink: deltas to a star's clients; a tree's root sends its edges
        # float32, as the simulated tree does (its edges send deltas to their leaves)
        downlink=downlink_plan(cfg) if cfg.topology.kind == "star" else None,
    )
    server = replace(server_options(s, insecure), uplink_codec=uplink_codec(cfg))  # [compression]
    if cfg.clock.enabled and cfg.clock.mode == "async":  # FedAsync/FedBuff in real time
        from murmura.node.async_coordinator import AsyncCoordinator
        from murmura.simtime.arrival import async_rule

        rule = async_rule(cfg.clock, cfg.cohort_size())
        return AsyncCoordinator(
            strategy, weights, layout, settings, server, rule, transport=s.transport
        )
    return Coordinator(strategy, weights, layout, settings, server, transport=s.transport)


def deployed_statistics(cfg: Any, classes: Callable[[], int]) -> StatsPlan | None:
    """The statistics phase ``[stats] enabled`` asks of the deployed workers, or None."""
    if not cfg.stats.enabled:
        return None
    return plan_from_config(cfg, classes())


def classes_of(data: Any) -> int:
    """The task's classes from its test labels (0: real-valued targets)."""
    from murmura.analytics.simulate import classes_of as of_data  # torch: the data is built

    return of_data(data)


def _schema_classes(cfg: Any) -> int:
    """A files job's classes from its schema (0: regression): the coordinator holds no data."""
    from murmura.data.schema import schema_from_mapping

    schema = schema_from_mapping(cfg.task.args["schema"])
    return 0 if getattr(schema, "regression", False) else len(schema.classes)


def parse_partition(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i_s, n_s = spec.split("/")
        i, n = int(i_s), int(n_s)
    except ValueError:
        raise ConfigError(f"--partition must look like i/n (e.g. 0/5), got {spec!r}") from None
    if not 0 <= i < n:
        raise ConfigError(f"--partition {spec}: need 0 <= i < n")
    return i, n


def local_client(
    task_name: str,
    partition: str,
    partitioner: str | None = None,
    seed: int = 0,
    task_args: dict[str, Any] | None = None,
    partition_args: dict[str, Any] | None = None,
    threads: int = 1,
    local_fraction: float | None = None,
) -> FitClient:
    """A TorchClient on partition ``i`` of ``n`` of a task, loaded on this machine.

    ``threads`` caps torch's intra-op threads: small models train fastest on one, and several
    workers often share a machine. ``local_fraction`` of the partition is held out for
    federated evaluation (``murmura.data.holdout``, split as client ``i`` in simulation).
    """
    import torch

    from murmura.client import FlatModel, LocalSGD, TorchClient
    from murmura.data.holdout import hold_out
    from murmura.tasks import load_task

    i, n = parse_partition(partition)
    torch.set_num_threads(threads)
    task = load_task(task_name, **(task_args or {}))
    kind = partitioner or str(getattr(task, "default_partitioner", "iid"))
    data = hold_out(task.federate(n, kind, partition_args or {}, seed=seed), local_fraction, seed)
    torch.manual_seed(seed)
    model = FlatModel(task.build_model())
    return TorchClient(i, data, task, model, LocalSGD(), seed=seed)


def client_from_config(cfg: Any, partition: str) -> FitClient:
    """Client ``i``'s learner on partition ``i/n`` of the task, partition and hold-out of ``cfg``.

    Built as simulated client ``i`` is (``murmura.compose.learner.worker_learner``): the same
    privacy wrappers and noise stream, the same attacker choice; the coordinator keeps the
    budgets.
    """
    i, n = parse_partition(partition)
    if n != cfg.partition.num_clients:
        raise ConfigError(f"--partition {partition}: the config has {cfg.partition.num_clients}")
    check_role("client", cfg)
    from murmura.compose.learner import worker_learner

    return worker_learner(cfg, i)
