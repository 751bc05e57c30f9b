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
import zlib
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
    import torch

    from murmura.client import FlatModel
    from murmura.sim.p2p import build_peer_learners, topology_graph
    from murmura.sim.peer import make_mixer
    from murmura.tasks import evaluate_classifier, load_task
    from murmura.topology import neighbour_weights

    cfg, tables = load_tables(path, overrides)
    check_role("peer", cfg)
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
    torch.set_num_threads(1)
    task = load_task(cfg.task.name, **cfg.task.args)
    kind = str(cfg.partition.kind or getattr(task, "default_partitioner", "iid"))
    data = task.federate(
        cfg.partition.num_clients, kind, cfg.partition.args(kind), seed=cfg.run.seed
    )
    torch.manual_seed(cfg.run.seed)
    model = FlatModel(task.build_model())
    learners, budgets = build_peer_learners(cfg, task, data, n, model)  # as the simulation
    test_x, test_y = data.test()

    def evaluate(weights: Any) -> Any:
        model.set(weights)
        return evaluate_classifier(model.module, task, test_x, test_y)

    settings = peer_settings(cfg, sec, index, insecure)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    mixer = make_mixer(
        t.robust,
        tau=t.tau,
        clip_weight=t.clip_weight,
        params=t.robust_args,
        pre=cfg.strategy.pre_aggregation,
        pre_params=cfg.strategy.pre_aggregation_args,
    )
    choco = peer_copies(cfg, model.get(), index, row)
    return Peer(
        settings, learners[index], model.get(), model.layout, row, mixer, evaluate, sender, budgets,
        choco,
    )  # fmt: skip


def peer_copies(cfg: Any, start: Any, index: int, row: Mapping[int, float]) -> Any:
    """CHOCO-gossip's copies of peer ``index`` (``[compression] uplink``), as the simulation's."""
    from murmura.compress import make_codec
    from murmura.compress.choco import PeerCopies

    c = cfg.compression
    if c.uplink == "none":
        return None
    assert c.gossip_step is not None  # checked when the config was loaded
    codec = make_codec(c.uplink, **c.args)
    return PeerCopies(codec, start, c.gossip_step, cfg.run.seed, index, row)


def edge_strategy(cfg: Any, sec: EdgeSection, children: int) -> Any:
    """The edge's rule over its children, as the simulated tree's edges run it.

    ``[strategy]`` with ``min_clients`` capped at the children's number, inside SecAgg+ with
    ``[secagg]`` (per edge; ``max_weight`` unset: the run's largest client, as simulated);
    under central DP the trusted edge's ``EdgeSum`` over the run's population instead.
    """
    from murmura.aggregate.preaggregation import strategy_rule
    from murmura.privacy.secure_wiring import apply_secagg
    from murmura.seeding import derive_seed
    from murmura.strategy import STRATEGIES
    from murmura.strategy.dp import EdgeSum

    s = cfg.strategy
    if cfg.privacy.mode == "central":
        population = edge_population(cfg, sec)
        return EdgeSum(population, s.fraction, cfg.run.seed, cfg.privacy.weight_cap, nested=False)
    rule = STRATEGIES.get(s.name)(
        fraction=s.fraction,
        min_clients=min(s.min_clients, children),
        aggregator=strategy_rule(s),
        seed=derive_seed(cfg.run.seed, zlib.crc32(sec.name.encode())),
    )
    if not cfg.secagg.enabled:
        return rule
    return apply_secagg(cfg, rule, largest_client(cfg) if cfg.secagg.max_weight is None else 0)


def largest_client(cfg: Any) -> int:
    """The run's largest client's example count (SecAgg+'s default ``max_weight``)."""
    data = _federated(cfg)
    return int(max(data.client_size(c) for c in range(data.num_clients)))


def _federated(cfg: Any) -> Any:
    """The run's clients' data, as the simulation splits it."""
    from murmura.tasks import load_task

    task = load_task(cfg.task.name, **cfg.task.args)
    kind = str(cfg.partition.kind or getattr(task, "default_partitioner", "iid"))
    return task.federate(
        cfg.partition.num_clients, kind, cfg.partition.args(kind), seed=cfg.run.seed
    )


def edge_population(cfg: Any, sec: EdgeSection) -> list[str | None]:
    """Central DP's population at this edge: its child at each client index, else None.

    The edge clips and sums only clients of the run, each at its own index of the run's one
    Poisson stream (the simulated tree's sample); what it cannot map is refused here.
    """
    n = cfg.partition.num_clients
    where = f"edge {sec.name!r}: [privacy] mode = 'central' is applied by murmura edge"
    if sec.allowlist is None:
        raise ConfigError(
            f"{where} only over known children: set [edge] allowlist to its clients' node ids"
        )
    index = dict(sec.client_index or {})
    out: list[str | None] = [None] * n
    for child in sec.allowlist:
        i = index.get(child, _client_number(child))
        if i is None or not 0 <= i < n:
            raise ConfigError(
                f"{where} to the run's clients 0..{n - 1} only: child {child!r} is none of "
                "them (name it client-I, or map it with [edge] client_index); an unknown "
                "child's update would enter the sum without the run's sampling"
            )
        if out[i] is not None:
            raise ConfigError(f"{where}: children {out[i]!r} and {child!r} are both client {i}")
        out[i] = child
    return out


def _client_number(name: str) -> int | None:
    """``I`` of a node named ``client-I`` (the simulated client's node id), else None."""
    head, _, tail = name.partition("-")
    return int(tail) if head == "client" and tail.isdigit() else None


def build_edge(
    path: Path | str, overrides: list[str] | None = None, insecure: bool = False
) -> Edge:
    """The edge aggregator of ``[edge]`` in ``path``, running ``[strategy]`` over its children."""
    cfg, tables = load_tables(path, overrides)
    check_role("edge", cfg)
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
