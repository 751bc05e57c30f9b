from pathlib import Path
from typing import Any

import pytest

from murmura.config import config_from_dict
from murmura.errors import ConfigError
from murmura.node.role_limits import check_role
from murmura.sim.builder import build_experiment

SPEEDS = [0.001] * 5 + [0.05, 0.06, 10.0]  # client-5 and -6 medium, client-7 very slow


def small(clock: dict[str, Any], rounds: int = 2, **more: Any) -> dict[str, Any]:
    return {
        "run": {"rounds": rounds, "seed": 1},
        "partition": {"kind": "iid", "num_clients": 8},
        "client": {"epochs": 1, "batch_size": 16, "lr": 0.1},
        "strategy": {"min_clients": 2, "fraction": 0.75},
        "simulation": {"executor": "sequential"},
        "clock": {"enabled": True, "speed": "given", "per_sample": SPEEDS, **clock},
        **more,
    }


def test_deadline_and_over_selection_list_the_stragglers_with_their_reason() -> None:
    cfg = config_from_dict(small({"deadline_s": 100.0, "over_selection": 1.34}))
    history = build_experiment(cfg).simulation.run(2)
    for m in history.rounds:
        assert m.participants == 6  # the first 6 of the 8 drawn
        reasons = {f.node: f.reason for f in m.failures}
        assert set(reasons) == {"client-6", "client-7"}
        assert "after the first 6 of 8" in reasons["client-6"]
        assert "past the deadline 100.0 s" in reasons["client-7"]
        assert reasons["client-7"].startswith("client raised Straggler: would finish ")
        assert 1.0 < float(m.extra["round_sim_seconds"]) < 100.0  # type: ignore[arg-type]
    t1, t2 = (float(m.extra["sim_time"]) for m in history.rounds)  # type: ignore[arg-type]
    assert 0 < t1 < t2


def test_a_synchronous_round_waits_for_its_slowest_client() -> None:
    cfg = config_from_dict(small({}, rounds=1, strategy={"min_clients": 2, "fraction": 1.0}))
    (m,) = build_experiment(cfg).simulation.run(1).rounds
    assert m.participants == 8 and not m.failures
    assert float(m.extra["round_sim_seconds"]) > 1000  # type: ignore[arg-type]


def test_clocked_runs_are_deterministic() -> None:
    for clock in (
        {"deadline_s": 100.0, "over_selection": 1.34},
        {"mode": "async", "buffer_size": 3},
    ):
        a = build_experiment(config_from_dict(small(clock))).simulation.run(2)
        b = build_experiment(config_from_dict(small(clock))).simulation.run(2)
        assert a.weights.tobytes() == b.weights.tobytes()


def test_fedbuff_on_digits_learns_and_carries_the_time() -> None:
    cfg = config_from_dict(small({"mode": "async", "buffer_size": 3, "concurrency": 5}, rounds=6))
    history = build_experiment(cfg).simulation.run(6)
    assert [m.participants for m in history.rounds] == [3] * 6
    acc = history.rounds[-1].test_accuracy
    assert acc is not None and acc > 0.7


@pytest.mark.parametrize(
    ("clock", "more", "message"),
    [
        ({"mode": "async"}, {"secagg": {"enabled": True}}, "secure aggregation needs a fixed"),
        ({"mode": "async", "deadline_s": 5.0}, {}, "are for mode = 'sync'"),
        ({"mode": "async", "algorithm": "fedasync"}, {}, "strategy.min_clients = 2 with"),
        ({}, {"topology": {"kind": "ring", "args": {"n": 8}}}, "the simulated clock times a star"),
        (
            {"mode": "async", "buffer_size": 2},
            {"privacy": {"mode": "central", "noise_multiplier": 1.0, "clip_norm": 1.0}},
            "strategy.fraction = clock.buffer_size / partition.num_clients = 0.25",
        ),
    ],
)
def test_what_does_not_compose_is_refused_at_load_time(
    clock: dict[str, Any], more: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        config_from_dict(small(clock, **more))


def test_deployed_roles_refuse_the_clock() -> None:
    cfg = config_from_dict(small({"mode": "async", "buffer_size": 2}))
    for role in ("server", "client", "edge"):
        with pytest.raises(ConfigError, match=r"\[clock\] enabled = true"):
            check_role(role, cfg)  # type: ignore[arg-type]


def test_a_client_that_goes_offline_mid_round_is_a_failure_with_the_reason(
    tmp_path: Path,
) -> None:
    trace = tmp_path / "trace.csv"
    rows = [f"client-{i},0,100000" for i in range(7)] + ["client-7,0,50"]
    trace.write_text("client,start,end\n" + "\n".join(rows) + "\n")
    clock = {"availability": "trace", "trace": str(trace)}
    data = small(clock, rounds=1, strategy={"min_clients": 2, "fraction": 1.0})
    (m,) = build_experiment(config_from_dict(data)).simulation.run(1).rounds
    assert m.participants == 7
    (failure,) = m.failures
    assert failure.node == "client-7"
    assert failure.reason.startswith("client raised Straggler: went offline 50.0 s into the round")
    assert float(m.extra["round_sim_seconds"]) == pytest.approx(50.0)  # type: ignore[arg-type]
