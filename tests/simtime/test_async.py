import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from murmura.simtime.arrival import AsyncRule
from murmura.simtime.asynchronous import AsyncSimulation
from murmura.simtime.availability import Always, Trace
from murmura.simtime.clock import SimClock
from murmura.simtime.profiles import Profile
from murmura.simtime.staleness import constant, polynomial
from murmura.strategy import FedAvg
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

D = 4
U = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)


class Fixed:
    """A client that always sends ``U`` for ``n`` examples; counts its fits."""

    def __init__(self, node_id: str) -> None:
        self.node_id, self.fits = node_id, 0

    def fit(self, ins: FitIns) -> FitRes:
        self.fits += 1
        return FitRes(update=U.copy(), num_examples=10)

    def evaluate(self, weights: Vector) -> EvaluateRes:
        return EvaluateRes(0.0, 0)


def simulation(
    n: int, k: int, concurrency: int, lr: float, *, algorithm: str = "fedbuff", **rule: object
) -> tuple[AsyncSimulation, list[Fixed]]:
    clients = [Fixed(f"c{i}") for i in range(n)]
    speeds = {c.node_id: Profile(0.01 * (1 + 7 * (i % 3)), 1e9, 1e9) for i, c in enumerate(clients)}
    clock = SimClock(speeds, Always(), epochs=1, size=D)
    args: dict[str, object] = {"staleness": constant, "max_staleness": None, **rule}
    sim = AsyncSimulation(
        FedAvg(min_clients=1, server_lr=lr),
        clients,
        np.zeros(D, dtype=np.float32),
        clock=clock,
        rule=AsyncRule(algorithm, k, 0.6, concurrency=concurrency, **args),  # type: ignore[arg-type]
        seed=0,
    )
    return sim, clients


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 12),
    st.integers(1, 5),
    st.integers(1, 12),
    st.floats(0.1, 2.0),
    st.integers(1, 6),
)
def test_fedbuff_aggregates_every_k_arrivals_by_the_server_step(
    n: int, k: int, concurrency: int, lr: float, rounds: int
) -> None:
    sim, clients = simulation(n, k, concurrency, lr)
    before = sim.weights.copy()
    history = sim.run(rounds)
    assert [m.participants for m in history.rounds] == [k] * rounds
    # every update is U: each aggregation moves the model by exactly lr * U
    assert np.allclose(history.weights - before, rounds * lr * U, atol=1e-4)
    times = [float(m.extra["sim_time"]) for m in history.rounds]  # type: ignore[arg-type]
    assert times == sorted(times) and times[0] > 0
    assert sum(c.fits for c in clients) >= rounds * k


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 10), st.integers(1, 3), st.integers(1, 4))
def test_stale_updates_count_less_by_the_staleness_function(n: int, k: int, rounds: int) -> None:
    history = simulation(n, k, n, 1.0, staleness=polynomial(0.5))[0].run(rounds)
    moved = float(np.dot(history.weights, U) / np.dot(U, U))
    worst = max(int(m.extra["staleness_max"]) for m in history.rounds)  # type: ignore[call-overload]
    assert rounds * (1 + worst) ** -0.5 - 1e-4 <= moved <= rounds + 1e-4
    if worst > 0:
        assert moved < rounds - 1e-4


def test_updates_staler_than_the_limit_are_refused_with_the_reason() -> None:
    sim, _ = simulation(9, 2, 9, 1.0, max_staleness=0)
    history = sim.run(4)
    assert all(m.extra["staleness_max"] == 0 for m in history.rounds)
    reasons = [f.reason for m in history.rounds for f in m.failures]
    assert reasons and all(r.startswith("stale: staleness ") for r in reasons)
    assert "> clock.max_staleness 0" in reasons[0]


def test_fedasync_mixes_the_local_model_in_with_decayed_weight() -> None:
    sim, _ = simulation(4, 1, 1, 1.0, algorithm="fedasync")
    history = sim.run(3)  # one client in flight: never stale, w <- w + 0.6 (w0 + U - w)
    assert [m.extra["staleness_max"] for m in history.rounds] == [0, 0, 0]
    assert np.allclose(history.weights, 0.6 * U * 3, atol=1e-5)


def test_same_seed_same_model_and_times() -> None:
    a = simulation(7, 3, 5, 1.0, staleness=polynomial(0.5))[0].run(5)
    b = simulation(7, 3, 5, 1.0, staleness=polynomial(0.5))[0].run(5)
    assert a.weights.tobytes() == b.weights.tobytes()
    assert [m.extra["sim_time"] for m in a.rounds] == [m.extra["sim_time"] for m in b.rounds]


def test_a_free_slot_goes_to_a_client_as_soon_as_it_comes_online() -> None:
    clients = [Fixed("slow"), Fixed("late")]
    speeds = {"slow": Profile(1.0, 1e9, 1e9), "late": Profile(0.01, 1e9, 1e9)}
    online = Trace({"slow": [(0.0, 1e6)], "late": [(0.5, 1e6)]})
    sim = AsyncSimulation(
        FedAvg(min_clients=1),
        clients,
        np.zeros(D, dtype=np.float32),
        clock=SimClock(speeds, online, epochs=1, size=D),
        rule=AsyncRule("fedbuff", 1, 0.6, constant, None, concurrency=2),
        seed=0,
    )
    (m,) = sim.run(1).rounds  # "late" starts at 0.5 s and is back at 0.6 s; "slow" needs 10 s
    assert m.extra["sim_time"] == pytest.approx(0.6)
    assert clients[1].fits == 1
