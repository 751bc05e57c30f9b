"""Central DP at a deployed edge (``murmura edge``): ``EdgeSum`` over the run's population.

The edge maps each allowlisted child to its client index of the run (``client-I``, or
``[edge] client_index``), samples them from the simulated tree's one Poisson stream, and
clips every child's update itself; what it cannot map is refused when the config loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.aggregate.buffer import UpdateBuffer
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.edge import PartialRound
from murmura.node.topology_deploy import EdgeSection, build_edge, edge_population
from murmura.strategy.dp import CLIP_KEY, EdgeSum, poisson_members, poisson_sample

N = 6
CENTRAL = {
    "partition": {"num_clients": N},
    "topology": {"kind": "tree", "edges": 2},
    "strategy": {"fraction": 0.5},
    "privacy": {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0},
}


def _section(allowlist: list[str] | None, **extra: Any) -> EdgeSection:
    return EdgeSection(name="edge-1", parent="127.0.0.1:1", allowlist=allowlist, **extra)


def test_children_map_to_their_client_index_by_name_or_by_table() -> None:
    cfg = config_from_dict(CENTRAL)
    got = edge_population(cfg, _section(["client-0", "client-2"]))
    assert got == ["client-0", None, "client-2", None, None, None]
    mapped = _section(["alice", "client-5"], client_index={"alice": 1})
    assert edge_population(cfg, mapped) == [None, "alice", None, None, None, "client-5"]


@pytest.mark.parametrize(
    ("section", "why"),
    [
        (_section(None), "only over known children: set \\[edge\\] allowlist"),
        (_section(["client-0", "edge-9"]), "child 'edge-9' is none of them"),
        (_section(["client-6"]), "clients 0..5 only: child 'client-6'"),
        (_section(["a", "client-1"], client_index={"a": 1}), "'a' and 'client-1' are both"),
    ],
)
def test_what_the_edge_cannot_map_is_refused(section: EdgeSection, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as err:
        edge_population(config_from_dict(CENTRAL), section)
    assert "edge 'edge-1': [privacy] mode = 'central'" in str(err.value)


def test_build_edge_refuses_an_unmapped_child_before_any_state(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        "[partition]\nnum_clients = 6\n[topology]\nkind = 'tree'\nedges = 2\n"
        "[privacy]\nmode = 'central'\nnoise_multiplier = 1.0\n"
        f"[edge]\nname = 'edge-1'\nparent = '127.0.0.1:1'\nstate_dir = '{tmp_path / 'e'}'\n"
        "allowlist = ['client-0', 'worker-x']\n"
    )
    with pytest.raises(ConfigError, match="child 'worker-x' is none of them"):
        build_edge(path, insecure=True)
    assert not (tmp_path / "e").exists()


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 50), st.floats(0.05, 0.95))
def test_the_edge_samples_its_share_of_the_flat_poisson_draw(
    seed: int, round_: int, rate: float
) -> None:
    everyone = [f"client-{i}" for i in range(N)]
    flat = set(poisson_sample(seed, round_, everyone, rate))
    mine: list[str | None] = [n if i % 2 == 0 else None for i, n in enumerate(everyone)]
    assert poisson_members(seed, round_, mine, rate) == {n for n in flat if n in mine}
    edge = EdgeSum(mine, rate, seed, None, nested=False)
    assert set(edge.sample(round_, everyone + ["stranger"])) == {n for n in flat if n in mine}


def _buffer(rows: dict[str, list[float]]) -> UpdateBuffer:
    buf = UpdateBuffer(len(rows), 2)
    for node, row in rows.items():
        buf.add(node, np.asarray(row, dtype=np.float32), 10, {})
    return buf


def test_a_deployed_edge_clips_every_child_itself() -> None:
    rows = {"client-0": [3.0, 4.0], "stranger": [30.0, 40.0]}  # norms 5 and 50, clip 1
    config = {CLIP_KEY: 1.0}
    deployed = PartialRound(EdgeSum(["client-0", None], 1.0, 0, None, nested=False))
    deployed.config = config
    assert deployed.aggregate(1, np.zeros(2, np.float32), _buffer(rows), []) is None
    assert deployed.last is not None
    total, counts = deployed.last
    np.testing.assert_allclose(total, [0.6 + 0.6, 0.8 + 0.8], rtol=1e-6)
    assert counts == {"dp_clients": 2.0, "dp_clipped": 2.0, "dp_under": 0.0}
    # the simulated tree's EdgeSum trusts a non-member as an edge below: summed as it is
    nested, _ = EdgeSum(["client-0", None], 1.0, 0, None).partial_sum(1, config, _buffer(rows))
    np.testing.assert_allclose(nested, [0.6 + 30.0, 0.8 + 40.0], rtol=1e-6)
