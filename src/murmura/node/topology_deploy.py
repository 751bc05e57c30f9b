"""Building networked peers and edge aggregators from config: ``[peers]`` and ``[edge]``.

A P2P deployment config is a P2P run config (``[topology] kind = "ring"`` etc.) plus a
``[peers]`` table with one address per peer; peer K listens on ``addresses[K]``, holds the
K-th contiguous block of the run's clients (as in the simulation) and uses the certificate
``<key_dir>/<names[K]>.pem``. Only a peer started with ``--attack`` (a ``RedTeam``)
attacks; no config key can make a deployed peer malicious. An edge config is a run config
plus an ``[edge]`` table: the parent's address, where the edge listens for its children, and
its own certificate; the edge runs the simulated tree's edge rule over its children:
``[strategy]`` (inside per-edge SecAgg+ with ``[secagg]``), or under central DP ``EdgeSum``
over its allowlisted children, each mapped to its client index of the run.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from murmura.compress.uplink import uplink_codec
from murmura.errors import ConfigError
from murmura.node.downlink import downlink_plan
from murmura.node.peer import Peer, PeerSettings
from murmura.node.role_limits import check_role
from murmura.transport import keys
from murmura.transport.grpc_client import LinkOptions
from murmura.transport.grpc_server import ServerOptions

if TYPE_CHECKING:
    from murmura.attacks.peer_sender import RoundSender
    from murmura.node.edge import Edge

log = logging.getLogger(__name__)

TABLES = ("server", "peers", "edge")


class PeersSection(BaseModel):
    """[peers]: every peer's address, names and keys, and round timing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addresses: list[str] = Field(min_length=2)
    names: list[str] | None = None
    """Node ids (certificate common names); default ``peer-0``, ``peer-1``, ..."""
    key_dir: str | None = None
    state_dir: str = "runs/peers"
    """Each peer keeps its checkpoint and metrics in ``state_dir/<name>``."""
    round_timeout: float = Field(10.0, gt=0)
    join_timeout: float = Field(60.0, gt=0)
    round_period: float = Field(0.0, ge=0)
    """Least seconds between the starts of two rounds (paces the gossip); 0: no pacing."""
    max_model_mb: float = Field(2048.0, gt=0)
    chunk_kb: int = Field(1024, ge=1, le=3072)

    def peer_names(self) -> list[str]:
        """The node ids, checked against the addresses."""
        names = self.names or [f"peer-{i}" for i in range(len(self.addresses))]
        if len(names) != len(self.addresses) or len(set(names)) != len(names):
            raise ConfigError("[peers] names must be unique, one per address")
        return names


class EdgeSection(BaseModel):
    """[edge]: the parent, where the edge listens, its identity and its children's rounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    parent: str
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)
    key_dir: str | None = None
    allowlist: list[str] | None = None
    state_dir: str = "runs/edges"
    round_timeout: float = Field(60.0, gt=0)
    min_nodes: int = Field(1, ge=1)
    join_timeout: float = Field(120.0, ge=0)
    heartbeat: float = Field(1.0, gt=0)
    lost_after: float = Field(5.0, gt=0)
    client_index: dict[str, int] | None = None
    """The run's client index of each child (central DP: which of the run's Poisson draws is
    the child's); unset, a child named ``client-I`` is client ``I``, as simulated client I."""


def load_tables(path: Path | str, overrides: list[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """A deployment TOML: the run ``Config`` and its deployment tables (server, peers, edge)."""
    from murmura.config import apply_overrides, config_from_dict

    try:
        data = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    data = apply_overrides(data, overrides or [])
    tables = {t: data.pop(t) for t in TABLES if t in data}
    return config_from_dict(data, str(path)), tables


def grpc_only(tables: dict[str, Any], role: str, path: object) -> None:
    """Refuse ``[server] transport`` other than gRPC for a role that speaks only gRPC."""
    from murmura.transport.registry import DEFAULT

    server = tables.get("server")
    chosen = server.get("transport", DEFAULT) if isinstance(server, dict) else DEFAULT
    if chosen != DEFAULT:
        raise ConfigError(
            f"{path} [server] transport = {chosen!r}: murmura {role} speaks {DEFAULT!r} only "
            "(murmura.transport.registry serves the star's coordinator and workers)"
        )


def _section(model: type[BaseModel], tables: dict[str, Any], table: str, path: object) -> Any:
    if table not in tables:
        raise ConfigError(f"{path} has no [{table}] table")
    try:
        return model(**tables[table])
    except ValidationError as exc:
        raise ConfigError(f"{path} [{table}]: {exc}") from None


def credentials(key_dir: str | None, name: str, insecure: bool) -> keys.Credentials | None:
    """The node's TLS files from ``key_dir`` (None when insecure)."""
    if insecure:
        return None
    if key_dir is None:
        raise ConfigError("key_dir is required for TLS (or run with --insecure on loopback)")
    f = keys.node_files(key_dir, name)
    try:
        return keys.Credentials.load(f.cert, f.key, f.ca)
    except OSError as exc:
        raise ConfigError(f"cannot read the TLS files of {name!r} in {key_dir}: {exc}") from None


def peer_settings(cfg: Any, sec: PeersSection, index: int, insecure: bool) -> PeerSettings:
    """Peer ``index``'s identity, addresses and timing from the run config and ``[peers]``."""
    names = sec.peer_names()
    return PeerSettings(
        index=index,
        names=names,
        addresses=sec.addresses,
        run_id=cfg.run.name,
        state_dir=Path(sec.state_dir) / names[index],
        rounds=cfg.run.rounds,
        round_timeout_s=sec.round_timeout,
        join_timeout_s=sec.join_timeout,
        round_period_s=sec.round_period,
        evaluate_every=cfg.evaluation.every,
        credentials=credentials(sec.key_dir, names[index], insecure),
        insecure=insecure,
        max_model_bytes=int(sec.max_model_mb * (1 << 20)),
        chunk_size=sec.chunk_kb * 1024,
    )


@dataclass(frozen=True, slots=True)
class RedTeam:
    """An attack a deployed peer was told to run on its command line (``--attack``)."""

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)


def check_deployable(t: Any) -> None:
    """Refuse ``[topology]`` settings that a gRPC deployment cannot honour, saying why."""
    if t.time_varying or t.dropout:
        raise ConfigError(
            "[topology] time_varying and dropout are simulation-only: deployed peers keep a "
            "fixed graph, and a neighbour that really drops out is skipped by its deadline"
        )
    if t.byzantine_fraction or t.byzantine_peers:
        raise ConfigError(
            "[topology] byzantine_fraction / byzantine_peers are not read by deployed peers, so "
            "a shared config never makes one malicious: start the attacking peer with "
            "`murmura peer CONFIG --id K --attack NAME` (red-teaming) instead"
        )


def red_team_sender(attack: RedTeam, name: str, neighbours: int, seed: int) -> RoundSender:
    """The attacking peer's sender, announced loudly in the log."""
    from murmura.attacks.peer_sender import logged, peer_attack

    sender = peer_attack(attack.kind, attack.args, name, neighbours, seed)
    sender = logged(sender, name, attack.kind)
    log.warning(
        "node=%s: RED-TEAM PEER: attack %s %s is ON; this peer sends corrupted models to its "
        "%d neighbours (started with --attack)",
        name, attack.kind, dict(attack.args), neighbours,
    )  # fmt: skip
    return sender


def build_peer(
    path: Path | str,
    index: int,
    overrides: list[str] | None = None,
    insecure: bool = False,
    attack: RedTeam | None = None,
) -> Peer:
    """Peer ``index`` of the P2P run in ``path``: its data block, learner, mixer and links.

    ``attack`` (red-teaming only) makes it send what that attack produces instead of its model.
    """
    from murmura.compose.peer import gossip_codec, peer_learners, peer_mixer, topology_graph
    from murmura.compose.workload import central_test, workload
    from murmura.compress.choco import PeerCopies
    from murmura.topology import neighbour_weights

    cfg, tables = load_tables(path, overrides)
    check_role("peer", cfg)
    grpc_only(tables, "peer", path)
    sec: PeersSection = _section(PeersSection, tables, "peers", path)
    t, n = cfg.topology, len(sec.addresses)
    if not 0 <= index < n:
        raise ConfigError(f"--id {index}: [peers] lists {n} peers (0..{n - 1})")
    check_deployable(t)
    graph = topology_graph(t, n)
    if graph.number_of_nodes() != n:
        raise ConfigError(f"[topology] has {graph.number_of_nodes()} nodes, [peers] {n}")
    row = neighbour_weights(graph)[index]
    sender = None
    if attack is not None and cfg.compression.uplink != "none":
        raise ConfigError(
            "--attack with [compression] uplink (CHOCO-gossip): a red-team peer sends models, "
            "CHOCO peers exchange compressed differences; set compression.uplink = 'none'"
        )
    if attack is not None:  # before any data is loaded: a bad attack fails fast
        name = sec.peer_names()[index]
        sender = red_team_sender(attack, name, len(row) - (index in row), cfg.run.seed)
    w = workload(cfg, held_out=False, threads=1)
    learners, budgets = peer_learners(cfg, w.task, w.data, n, w.model)  # as the simulation
    settings = peer_settings(cfg, sec, index, insecure)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    start, gossip = w.model.get(), gossip_codec(cfg)  # [compression] uplink: CHOCO's copies
    choco = None
    if gossip is not None:
        choco = PeerCopies(gossip[0], start, gossip[1], cfg.run.seed, index, row)
    return Peer(
        settings, learners[index], start, w.model.layout, row, peer_mixer(cfg), central_test(w),
        sender, budgets, choco,
    )  # fmt: skip


def edge_strategy(cfg: Any, sec: EdgeSection, children: int) -> Any:
    """The edge's rule over its children, as the simulated tree's edge of that name runs it.

    Under central DP the trusted edge's ``EdgeSum`` over its allowlisted children, each at
    its client index of the run (``murmura.compose.edge``).
    """
    from murmura.compose.edge import edge_strategy as rule
    from murmura.compose.workload import largest_client

    needs_largest = cfg.secagg.enabled and cfg.secagg.max_weight is None
    largest = largest_client(cfg, _federated(cfg)) if needs_largest else 0
    population = edge_population(cfg, sec) if cfg.privacy.mode == "central" else []
    return rule(cfg, sec.name, children, largest, population, nested=False)


def edge_population(cfg: Any, sec: EdgeSection) -> list[str | None]:
    """Central DP's population at this edge: its child at each client index, else None."""
    from murmura.compose.edge import edge_population as population

    return population(cfg, sec.name, sec.allowlist, dict(sec.client_index or {}))


def _federated(cfg: Any) -> Any:
    """The run's clients' data, as the simulated tree splits it."""
    from murmura.compose.workload import federate
    from murmura.tasks import load_task

    return federate(cfg, load_task(cfg.task.name, **cfg.task.args), held_out=False)[1]


def build_edge(
    path: Path | str, overrides: list[str] | None = None, insecure: bool = False
) -> Edge:
    """The edge aggregator of ``[edge]`` in ``path``, running ``[strategy]`` over its children."""
    cfg, tables = load_tables(path, overrides)
    check_role("edge", cfg)
    grpc_only(tables, "edge", path)
    sec: EdgeSection = _section(EdgeSection, tables, "edge", path)
    return edge_from(cfg, sec, credentials(sec.key_dir, sec.name, insecure), insecure)


def edge_from(cfg: Any, sec: EdgeSection, creds: keys.Credentials | None, insecure: bool) -> Edge:
    """The edge of run config ``cfg`` (``check_role`` passed), ``[edge]`` and ``creds``.

    ``murmura edge CONFIG`` builds it from a file; a standing edge from each job.
    """
    from murmura.client import FlatModel
    from murmura.node.coordinator import CoordinatorSettings
    from murmura.node.edge import Edge, EdgeSettings
    from murmura.tasks import load_task

    if creds is not None and (role := keys.identity_of(creds.cert)[1]) != "edge":
        raise ConfigError(
            f"edge {sec.name!r}: its certificate has role {role!r}; workers accept only an "
            f"edge certificate: murmura keys issue {sec.key_dir} {sec.name} --role edge"
        )
    children = len(sec.allowlist) if sec.allowlist is not None else sec.min_nodes
    min_clients = min(cfg.strategy.min_clients, children)
    strategy = edge_strategy(cfg, sec, children)  # refuses what it cannot map, before any state
    if cfg.attack.kind != "none":  # its children attack; an omniscient kind needs a round loop
        from murmura.attacks.wiring import deployed_attack
        from murmura.node.role_limits import COMMANDS

        deployed_attack(cfg, _federated(cfg), COMMANDS["edge"])
    layout = FlatModel(load_task(cfg.task.name, **cfg.task.args).build_model()).layout
    state_dir = Path(sec.state_dir) / sec.name
    coordinator = CoordinatorSettings(
        state_dir=state_dir,
        run_name=f"{cfg.run.name}-{sec.name}",
        round_timeout_s=sec.round_timeout,
        min_nodes=sec.min_nodes,
        join_timeout_s=sec.join_timeout,
        heartbeat_s=sec.heartbeat,
        lost_after_s=sec.lost_after,
        evaluate_every=0,
        shutdown_grace_s=1.0,
        max_weight_share=cfg.strategy.max_weight_share,
        downlink=downlink_plan(cfg),  # [compression]: deltas to the leaves, as in simulation
    )
    server = ServerOptions(
        host=sec.host,
        port=sec.port,
        credentials=creds,
        insecure=insecure,
        allowlist=frozenset(sec.allowlist) if sec.allowlist is not None else None,
        uplink_codec=uplink_codec(cfg),  # [compression]: the leaves' codec, as in simulation
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    settings = EdgeSettings(
        sec.name, sec.parent, coordinator, server, creds, min_clients, LinkOptions(pull_wait_s=5.0)
    )
    return Edge(settings, strategy, layout)
