"""A deployed worker reads ``[attack]``: the simulation's choice, attack and wrapper.

``murmura client --config`` with ``[attack]`` makes worker ``i`` malicious exactly when the
simulation's seeded choice picks client ``i``, and its update is the simulated attacker's;
an omniscient attack (it needs the round's honest updates) is refused with the reason by the
worker, the server and an edge.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from murmura.attacks.clients import AttackingClient
from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.deploy import client_from_config
from murmura.node.topology_deploy import build_edge
from murmura.sim.builder import build_experiment
from murmura.types import FitIns

N = 4


def _config(kind: str, **attack: Any) -> Any:
    return config_from_dict(
        {
            "run": {"rounds": 1, "seed": 5},
            "task": {"name": "digits"},
            "partition": {"kind": "quantity", "num_clients": N},
            "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
            "attack": {"kind": kind, "fraction": 0.5, **attack},
        }
    )


def test_the_workers_the_simulation_chooses_attack_with_its_update() -> None:
    cfg = _config("sign_flip")
    exp = build_experiment(cfg)
    sim_clients = exp.simulation.clients
    weights = np.asarray(exp.simulation.weights)
    ins = FitIns(1, weights, cfg.client.model_dump())
    chosen = []
    for i in range(N):
        worker = client_from_config(cfg, f"{i}/{N}")
        if isinstance(worker, AttackingClient):
            chosen.append(f"client-{i}")
        got = worker.fit(ins)
        want = sim_clients[f"client-{i}"].fit(ins)
        np.testing.assert_allclose(got.update, want.update, rtol=0, atol=1e-6)
        assert got.num_examples == want.num_examples
    assert chosen == list(exp.byzantine) and len(chosen) == 2


@pytest.mark.parametrize("kind", ["alie", "min_max"])
def test_an_omniscient_attack_is_refused_by_the_worker_and_the_server(
    tmp_path: Any, kind: str
) -> None:
    from murmura.node.deploy import ServerSection, build_coordinator

    cfg = _config(kind)
    with pytest.raises(ConfigError) as err:
        client_from_config(cfg, f"0/{N}")
    assert str(err.value).startswith(
        f"[attack] kind = {kind!r} is not applied by murmura client --config"
    )
    assert "honest updates" in str(err.value)
    with pytest.raises(ConfigError, match=rf"kind = '{kind}' is not applied by murmura server"):
        build_coordinator(cfg, ServerSection(state_dir=str(tmp_path / "s")), insecure=True)
    assert not (tmp_path / "s").exists()
    edge = tmp_path / "edge.toml"
    edge.write_text(
        f"[partition]\nnum_clients = {N}\n[topology]\nkind = 'tree'\n"
        f"[attack]\nkind = '{kind}'\n"
        f"[edge]\nname = 'edge-1'\nparent = '127.0.0.1:1'\nstate_dir = '{tmp_path / 'e'}'\n"
    )
    with pytest.raises(ConfigError, match=rf"kind = '{kind}' is not applied by murmura edge"):
        build_edge(edge, insecure=True)
    assert not (tmp_path / "e").exists()
