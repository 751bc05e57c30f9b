"""A tree job's ``[edge.NAME]`` tables: which standing edge serves which sites.

A deployed edge says who its children are with ``[edge] allowlist`` (and, under central DP,
``client_index``); a tree job says the same, once per edge, keyed by the edge's certificate
name::

    [topology]
    kind = "tree"
    edges = 2

    [edge.edge-1]
    allowlist = ["site-a", "site-b"]

    [edge.edge-2]
    allowlist = ["site-c", "site-d"]

A table may also set the timing of that edge's rounds (``JOB_EDGE_KEYS``); where the edge
listens, its keys and its state are the standing edge's own, and its parent is the job's
coordinator. ``parse_tree`` refuses what cannot run: a tree without edge tables, edge
tables in a star job, a count other than ``[topology] edges``, a site under two edges, an
edge that is also a site, and (central DP) a site the run's clients cannot map.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from murmura.errors import ConfigError
from murmura.node.topology_deploy import EdgeSection, edge_population

JOB_EDGE_KEYS = frozenset(
    {"allowlist", "client_index", "round_timeout", "min_nodes", "join_timeout", "heartbeat",
     "lost_after"}
)  # fmt: skip
"""``[edge.NAME]`` keys a job may set: the edge's sites and the timing of their rounds."""


@dataclass(frozen=True, slots=True)
class JobTree:
    """A tree job's edges: each edge's ``[edge.NAME]`` keys, in the job's order."""

    edges: Mapping[str, Mapping[str, Any]]
    min_clients: int
    """The job's ``[strategy] min_clients``: each edge needs that many of its sites (or all)."""

    def sites(self, edge: str) -> list[str]:
        """The sites under ``edge``."""
        return list(self.edges[edge]["allowlist"])

    def edge_of(self, site: str) -> str | None:
        """The edge ``site`` sits under (None: the job does not name it as a site)."""
        return next((e for e in self.edges if site in self.edges[e]["allowlist"]), None)

    def need(self, edge: str) -> int:
        """Sites of ``edge`` that must accept: ``min_nodes``, at least ``min_clients``.

        ``min_clients`` is capped at the edge's site count; a star job needs
        ``max(min_nodes, min_clients)`` of its sites likewise.
        """
        sites = len(self.edges[edge]["allowlist"])
        return max(int(self.edges[edge].get("min_nodes", 1)), min(self.min_clients, sites))

    def section(
        self, edge: str, parent: str, host: str, port: int, key_dir: str | None, state_dir: str
    ) -> EdgeSection:
        """The ``[edge]`` table of ``edge`` for this job, as ``murmura edge`` reads one."""
        keys = {**self.edges[edge], "min_nodes": self.need(edge)}
        return EdgeSection(name=edge, parent=parent, host=host, port=port, key_dir=key_dir,
                           state_dir=state_dir, **keys)  # fmt: skip


def parse_tree(tables: Any, cfg: Any, where: str) -> JobTree | None:
    """The job's tree from its ``[edge]`` tables (None for a star job); ConfigError if bad."""
    kind = cfg.topology.kind
    if tables is None:
        if kind == "tree":
            raise ConfigError(
                f"{where}: [topology] kind = 'tree' needs an [edge.NAME] table per standing "
                f'edge, naming its sites: [edge.edge-1] allowlist = ["site-a", ...]'
            )
        return None
    if kind != "tree":
        raise ConfigError(
            f"{where}: [edge] tables name a tree's edges; [topology] kind is {kind!r}"
        )
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{where}: [edge] must hold one [edge.NAME] table per edge")
    edges: dict[str, dict[str, Any]] = {}
    for name, table in tables.items():
        edges[name] = _edge_table(name, table, cfg, where)
    if len(edges) != cfg.topology.edges:
        raise ConfigError(
            f"{where}: [topology] edges = {cfg.topology.edges}, but the job names "
            f"{len(edges)} edges ({', '.join(f'[edge.{e}]' for e in edges)})"
        )
    seen: dict[str, str] = {}
    for name, table in edges.items():
        for site in table["allowlist"]:
            if site in edges:
                raise ConfigError(f"{where}: {site!r} is an edge and a site of [edge.{name}]")
            if site in seen:
                raise ConfigError(
                    f"{where}: site {site!r} is under two edges, [edge.{seen[site]}] and "
                    f"[edge.{name}]; a site has one parent"
                )
            seen[site] = name
    return JobTree(edges, cfg.strategy.min_clients)


def _edge_table(name: str, table: Any, cfg: Any, where: str) -> dict[str, Any]:
    """One ``[edge.NAME]`` table, checked as ``murmura edge`` would check its ``[edge]``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [edge.{name}] must be a table")
    refused = sorted(set(table) - JOB_EDGE_KEYS)
    if refused:
        raise ConfigError(
            f"{where} [edge.{name}]: {', '.join(refused)} belong to the standing edge, not "
            f"to a job; a job may set {', '.join(sorted(JOB_EDGE_KEYS))}"
        )
    allow = table.get("allowlist")
    if not isinstance(allow, list) or not allow or len(set(allow)) != len(allow):
        raise ConfigError(f"{where} [edge.{name}]: allowlist must list the edge's sites, each once")
    try:
        sec = EdgeSection(name=name, parent="-", **table)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where} [edge.{name}]: {problems}") from None
    if cfg.privacy.mode == "central":  # the edge's EdgeSum must map every site to a client
        edge_population(cfg, sec)
    return dict(table)
