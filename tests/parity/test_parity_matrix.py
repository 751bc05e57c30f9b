"""The parity matrix (issue 12's proof): simulated and deployed runs of one config agree.

Every cell is one run config and seed (tiny: 4 digits clients, 2 rounds, one local epoch)
for a topology (star, a two-level tree of 2 edges, a ring of 4 peers) and a capability.
The simulation half builds it with ``build_experiment``; the deployed half
(``parity_deployed.py``, one process for the whole matrix) builds the roles as ``murmura
server``/``client``/``edge``/``peer`` do and runs them over loopback gRPC. A cell passes
when both end with the same model (float tolerance), the same epsilon and flagged nodes
every round and the same failures, or when both refuse the config at load time naming the
same section. A cell where they differ is a defect of today's code, marked
``xfail(strict=True)`` with the defect; it fails the day it is fixed, so the mark goes
with the fix.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.sim.builder import build_experiment
from murmura.sim.p2p import P2PSimulation

ROUNDS, CLIENTS = 2, 4
DEPLOYED = Path(__file__).with_name("parity_deployed.py")
TOPOLOGIES = ("star", "tree", "ring")

_BASE: dict[str, Any] = {
    "run": {"name": "parity", "rounds": ROUNDS, "seed": 3},
    "task": {"name": "digits"},
    # quantity skew: unequal example counts, so the weights and the share cap matter
    "partition": {"kind": "quantity", "num_clients": CLIENTS},
    "client": {"epochs": 1, "batch_size": 32, "lr": 0.1},
    "strategy": {"name": "fedavg", "min_clients": 1},
    "evaluation": {"every": 0},
}
_TOPOLOGY: dict[str, dict[str, Any]] = {
    "star": {},
    "tree": {"kind": "tree", "edges": 2},  # strategy.fraction 0.5: each edge samples one child
    "ring": {"kind": "ring", "args": {"n": CLIENTS}},
}
_CAPABILITY: dict[str, dict[str, Any]] = {
    "fedavg": {},
    "fedadam": {"strategy": {"name": "fedadam", "server_lr": 0.05}},
    "robust": {"strategy": {"aggregator": "coordinate_median"}},
    "central_dp": {"privacy": {"mode": "central", "noise_multiplier": 0.5, "clip_norm": 1.0}},
    "local_dp": {"privacy": {"mode": "local", "noise_multiplier": 0.5, "clip_norm": 1.0}},
    "dp_sgd": {"privacy": {"dp_sgd": True, "dp_sgd_noise_multiplier": 1.0}},
    "secagg": {"secagg": {"enabled": True}},
    "max_weight_share": {"strategy": {"max_weight_share": 0.3}},
    "anomaly": {
        "anomaly": {
            "enabled": True,
            "score": "norm_ratio",
            "threshold": 1.2,
            "rounds": 1,
            "exclude": True,
        }
    },
    "attack": {"attack": {"kind": "sign_flip", "fraction": 0.25}},
    # FedNova's step normalisation behind a robust rule: the clamped tau_eff (issue 17)
    "fednova": {"strategy": {"aggregator": "coordinate_median", "normalize_steps": True}},
}
CAPABILITIES = tuple(_CAPABILITY)

# Cells both halves refuse at load time, and the section both must name.
REFUSED: dict[tuple[str, str], str] = {
    ("ring", "central_dp"): "privacy",
    ("ring", "secagg"): "secagg",
    ("ring", "max_weight_share"): "max_weight_share",
    ("ring", "fedadam"): "strategy",  # peers have no server step to run FedAdam's
    ("ring", "anomaly"): "anomaly",
    ("ring", "attack"): "attack",
    ("tree", "anomaly"): "anomaly",
    ("ring", "fednova"): "normalize_steps",  # peers mix models, not updates with step counts
}
# Cells where deployment and simulation differ today: each is a defect of issue 12.
DEFECTS: dict[tuple[str, str], str] = {}


def run_config(topology: str, capability: str) -> dict[str, Any]:
    """The run config of one cell (no deployment tables)."""
    cfg = copy.deepcopy(_BASE)
    for table, values in _CAPABILITY[capability].items():
        cfg[table] = {**cfg.get(table, {}), **values}
    if _TOPOLOGY[topology]:
        cfg["topology"] = dict(_TOPOLOGY[topology])
    if topology == "tree":  # SecAgg+ needs 2 children in an edge's round: both take part
        cfg["strategy"]["fraction"] = 1.0 if capability == "secagg" else 0.5
    if topology == "ring" and capability in ("robust", "fednova"):  # a peer's rule: [topology]
        cfg["strategy"].pop("aggregator")
        cfg["topology"]["robust"] = "coordinate_median"
    return cfg


def _cells(deployed: bool) -> list[Any]:
    out = []
    for t in TOPOLOGIES:
        for c in CAPABILITIES:
            marks = [pytest.mark.slow, pytest.mark.network] if deployed else []
            if deployed and (t, c) in DEFECTS:
                marks.append(pytest.mark.xfail(strict=True, reason=DEFECTS[t, c]))
            out.append(pytest.param(t, c, id=f"{t}-{c}", marks=marks))
    return out


@functools.cache
def simulate(topology: str, capability: str) -> dict[str, Any]:
    """The simulation half of a cell: its refusal, or its model, epsilons and failures."""
    try:
        sim = build_experiment(config_from_dict(run_config(topology, capability))).simulation
        history = sim.run(ROUNDS)
    except ConfigError as exc:
        return {"refused": str(exc)}
    model = np.stack(sim.x) if isinstance(sim, P2PSimulation) else np.asarray(sim.weights)
    return {
        "model": model,
        "rounds": [m.round for m in history.rounds],
        "extra": [
            {k: v for k, v in m.extra.items() if "epsilon" in k or k == "flagged"}
            for m in history.rounds
        ],
        "failures": [[m.round, f.node, f.reason] for m in history.rounds for f in m.failures],
    }


@pytest.mark.parametrize(("topology", "capability"), _cells(deployed=False))
def test_simulation_half(topology: str, capability: str) -> None:
    """Each cell simulates its rounds to a finite model, or is refused naming its section."""
    got = simulate(topology, capability)
    if (topology, capability) in REFUSED:
        assert REFUSED[topology, capability] in got.get("refused", "")
        return
    assert "refused" not in got, got
    assert got["rounds"] == list(range(1, ROUNDS + 1))
    assert np.isfinite(got["model"]).all()


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deployed half of every cell, run by one process (about 20-30 s in all)."""
    out = tmp_path_factory.mktemp("parity")
    cells = out / "cells.json"
    matrix = {t: {c: run_config(t, c) for c in CAPABILITIES} for t in TOPOLOGIES}
    cells.write_text(json.dumps(matrix))
    log = out / "deployed.log"
    tests, pythonpath = str(DEPLOYED.parents[1]), os.environ.get("PYTHONPATH")  # for portpool
    with log.open("wb") as fh:
        done = subprocess.run(
            [sys.executable, str(DEPLOYED), str(cells), str(out)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (tests, pythonpath)))},
            timeout=240,
            check=False,
        )
    assert done.returncode == 0, log.read_text(errors="replace")[-3000:]
    return out


@pytest.mark.parametrize(("topology", "capability"), _cells(deployed=True))
def test_deployed_equals_simulated(deployed: Path, topology: str, capability: str) -> None:
    """Same final model, epsilon and failures; or the same section refused by both."""
    sim = simulate(topology, capability)
    dep = json.loads((deployed / topology / f"{capability}.json").read_text())
    if "refused" in sim or "refused" in dep:
        section = REFUSED.get((topology, capability), "<not refused in simulation>")
        assert section in sim.get("refused", ""), f"simulation: {sim.get('refused')}"
        assert section in dep.get("refused", ""), f"deployed: {dep.get('refused')}"
        return
    assert dep["rounds"] == sim["rounds"]
    assert dep["failures"] == sim["failures"]  # first: a node missing explains a model apart
    model = np.load(deployed / topology / f"{capability}.npy")
    np.testing.assert_allclose(model, sim["model"], rtol=0, atol=1e-5)
    for d, s in zip(dep["extra"], sim["extra"], strict=True):
        assert d.keys() == s.keys()
        for key, value in s.items():
            assert d[key] == (value if key == "flagged" else pytest.approx(value, rel=1e-9)), key
