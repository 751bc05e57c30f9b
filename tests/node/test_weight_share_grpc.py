"""``[strategy] max_weight_share`` holds when deployed: coordinator and edge, real processes.

One worker claims 2^31 - 1 examples and pushes +1 in every coordinate; two honest workers
claim 10 each and push -1. With the cap at 0.4 the claimant weighs 0.4 of the round, so the
mean is 0.4 * 1 + 0.6 * (-1) = -0.2, whatever it claims; uncapped it was +0.99999998. An edge
applies the cap to its children and reports their capped total (13.33 + 20 = 33), so its
parent is not steered by the claim either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from murmura.aggregate.weights import cap_weight_share

pytestmark = [pytest.mark.slow, pytest.mark.network]

CAP, CLAIM, HONEST = 0.4, 2**31 - 1, 10
CHILDREN = {"attacker": (CLAIM, 1.0), "honest-1": (HONEST, -1.0), "honest-2": (HONEST, -1.0)}


def _expected_mean() -> tuple[float, float]:
    """The capped mean of the three pushes, and the capped total weight."""
    w = cap_weight_share(np.array([n for n, _ in CHILDREN.values()], dtype=np.float64), CAP)
    pushes = np.array([v for _, v in CHILDREN.values()])
    return float(w @ pushes / w.sum()), float(w.sum())


def _workers(procs, port: int, key_dir: Path, names: dict[str, tuple[int, float]]) -> None:  # type: ignore[no-untyped-def]
    for name, (claim, push) in names.items():
        args = ["--keys", str(key_dir), "--port", str(port), "--name", name]
        procs.start(name, "worker", *args, "--claim", str(claim), "--push", str(push))


def _model(procs, state: Path, round_: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return procs.checkpoint(state, round_)  # type: ignore[no-any-return]


def test_coordinator_caps_an_inflated_example_count(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_dir = procs.make_keys(tmp_path / "keys", list(CHILDREN))
    state, port = tmp_path / "state", procs.free_port()
    coordinator = procs.start(
        "coordinator", "coordinator", "--keys", str(key_dir), "--port", str(port),
        "--state", str(state), "--rounds", "1", "--min-nodes", "3", "--min-clients", "3",
        "--names", ",".join(CHILDREN), "--max-weight-share", str(CAP),
    )  # fmt: skip
    _workers(procs, port, key_dir, CHILDREN)
    assert coordinator.wait(90) == 0, procs.log("coordinator")

    delta = _model(procs, state, 1) - _model(procs, state, 0)
    mean, _ = _expected_mean()
    assert mean == pytest.approx(CAP * 1.0 + (1 - CAP) * -1.0)  # -0.2
    np.testing.assert_allclose(delta, mean, atol=1e-6)  # uncapped: +0.99999998


def test_edge_caps_its_children_and_reports_the_capped_total(procs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Root (no cap) <- edge (cap 0.4) <- the three children above; root <- one honest -1."""
    direct = {"honest-0": (HONEST, -1.0)}
    key_dir = procs.make_keys(tmp_path / "keys", ["edge-1", *CHILDREN, *direct], edges=("edge-1",))
    root_state, edge_state = tmp_path / "root", tmp_path / "edge"
    root_port, edge_port = procs.free_port(), procs.free_port()
    common = ["--keys", str(key_dir), "--timeout", "60"]
    root = procs.start(
        "root", "coordinator", *common, "--port", str(root_port), "--state", str(root_state),
        "--rounds", "1", "--min-nodes", "2", "--min-clients", "2", "--names", "edge-1,honest-0",
    )  # fmt: skip
    procs.start(
        "edge-1", "edge", *common, "--name", "edge-1", "--port", str(root_port),
        "--listen-port", str(edge_port), "--state", str(edge_state), "--min-nodes", "3",
        "--min-clients", "3", "--names", ",".join(CHILDREN), "--max-weight-share", str(CAP),
    )  # fmt: skip
    _workers(procs, edge_port, key_dir, CHILDREN)
    _workers(procs, root_port, key_dir, direct)
    assert root.wait(120) == 0, procs.log("root") + procs.log("edge-1")

    start = _model(procs, root_state, 0)
    mean, total = _expected_mean()
    edge_delta = _model(procs, edge_state, 1) - start
    np.testing.assert_allclose(edge_delta, mean, atol=1e-6)  # uncapped: +0.99999998
    # the edge reports round(33.33) = 33 examples; uncapped 2^31 + 19, which the root refuses
    reported = round(total)
    assert reported == 33
    root_delta = _model(procs, root_state, 1) - start
    expected = (reported * mean + HONEST * -1.0) / (reported + HONEST)
    np.testing.assert_allclose(root_delta, expected, atol=1e-6)  # -0.386
