"""A tree edge's role: its rule over its children, for a simulated edge and ``murmura edge``.

``[strategy]`` with ``min_clients`` capped at the children's number and a sample seeded by
the edge's name, inside per-edge SecAgg+ with ``[secagg]`` (the edge learns only its
children's weighted sum); under central DP the trusted edge's ``EdgeSum`` over the run's
population instead (the root adds the noise once).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from murmura.aggregate.preaggregation import strategy_rule
from murmura.config import Config
from murmura.errors import ConfigError
from murmura.privacy.secure_wiring import apply_secagg
from murmura.seeding import derive_seed
from murmura.strategy import STRATEGIES, Strategy
from murmura.strategy.dp import EdgeSum
from murmura.strategy.steps import with_step_normalisation


def edge_strategy(
    cfg: Config,
    name: str,
    children: int,
    largest: int,
    population: Sequence[str | None],
    *,
    nested: bool = True,
) -> Strategy:
    """Edge ``name``'s rule over its ``children``.

    ``largest``: the run's largest client's example count (SecAgg+'s default ``max_weight``;
    0 when unused). ``population``: under central DP, the run's clients by index (None where
    this edge serves none); ``nested``: whether the edge's children are edges themselves.
    """
    s = cfg.strategy
    if cfg.privacy.mode == "central":  # trusted edges sum clipped updates; the root noises
        return EdgeSum(
            list(population), s.fraction, cfg.run.seed, cfg.privacy.weight_cap, nested=nested
        )
    rule: Strategy = STRATEGIES.get(s.name)(
        fraction=s.fraction,
        min_clients=min(s.min_clients, children),
        aggregator=strategy_rule(s),
        # seeded by the edge's name, as the simulated edge of that name samples its children
        seed=derive_seed(cfg.run.seed, zlib.crc32(name.encode())),
    )
    rule = with_step_normalisation(rule, s.normalize_steps, s.max_weight_share)
    return apply_secagg(cfg, rule, largest)  # [secagg]: per edge; as is when off


def edge_population(
    cfg: Config, name: str, allowlist: Sequence[str] | None, client_index: dict[str, int]
) -> list[str | None]:
    """Central DP's population at a deployed edge: its child at each client index, else None.

    The edge clips and sums only clients of the run, each at its own index of the run's one
    Poisson stream (the simulated tree's sample); what it cannot map is refused here.
    ``client_index`` maps a child to its index; else a child named ``client-I`` is client I.
    """
    n = cfg.partition.num_clients
    where = f"edge {name!r}: [privacy] mode = 'central' is applied by murmura edge"
    if allowlist is None:
        raise ConfigError(
            f"{where} only over known children: set [edge] allowlist to its clients' node ids"
        )
    out: list[str | None] = [None] * n
    for child in allowlist:
        i = client_index.get(child, _client_number(child))
        if i is None or not 0 <= i < n:
            raise ConfigError(
                f"{where} to the run's clients 0..{n - 1} only: child {child!r} is none of "
                "them (name it client-I, or map it with client_index in its edge table: [edge] in "
                "an edge config, [edge.NAME] in a job); an unknown "
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
