"""The [topology] table: star, tree, or a peer-to-peer graph."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from murmura.config.base import Section


class TopologySection(Section):
    """[topology]: "star" is server-client; "tree" hierarchical; any other graph is P2P.

    For P2P, ``args`` go to the graph builder (``n``, the number of peers, defaults to
    ``partition.num_clients``; with fewer peers each holds a contiguous block of clients).
    ``algorithm`` "dpsgd" trains ``local_steps`` minibatches between exchanges, "gossip"
    ``client.epochs`` epochs; ``robust`` is "none", "clipped" (``tau``; adaptive when unset)
    or an aggregator name with ``robust_args``. ``edges`` is the tree's edge count.
    ``byzantine_peers`` names the attacking peers (else a seeded ``byzantine_fraction``), in
    simulation only: a deployed peer attacks only when started with ``murmura peer --attack``.
    They run ``attack`` (``sign_flip``, ``gaussian`` or ``scaling``, the star's own attacks)
    with ``attack_args``, on their update measured from ``attack_args.relative_to``:
    "delta" (default, the round's change) or "model" (the model itself).
    """

    kind: str = "star"
    args: dict[str, Any] = Field(default_factory=dict)
    algorithm: Literal["dpsgd", "gossip"] = "dpsgd"
    local_steps: int = Field(1, ge=1)
    robust: str = "none"
    robust_args: dict[str, Any] = Field(default_factory=dict)
    tau: float | None = Field(None, gt=0)
    clip_weight: float = Field(0.25, ge=0, lt=1)
    time_varying: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    byzantine_fraction: float = Field(0.0, ge=0, lt=1)
    byzantine_peers: list[int] | None = None
    attack: str = "sign_flip"
    attack_args: dict[str, Any] = Field(default_factory=dict)
    edges: int = Field(2, ge=1)
