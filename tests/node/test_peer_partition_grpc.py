"""A ring of 6 peers over mTLS gRPC is cut in two, runs on, heals and converges again.

Each peer is its own process (``murmura peer CONFIG --id K``) with its own certificate. Once
every peer has run ``CUT_AFTER`` rounds, the two opposite peers 0 and 3 are frozen with
SIGSTOP: their sockets stay open but nothing answers, which cuts the ring into the halves
{1, 2} and {4, 5}. The others keep running rounds, each paying one deadline for its frozen
neighbour and mixing with its half-mate only (weights renormalised); the halves drift apart.
After ``CUT_ROUNDS`` such rounds the frozen peers get SIGCONT: they find their neighbours
further on, jump to their round (never mixing a model of another round) and mix with them
again; the models come back together and every peer ends about as accurate as the same ring
never cut (the in-process P2P simulation of the same config, which mixes the same way and
matches the deployed ring to the last digit before the cut).

Measured on 2 cores (round_timeout 0.75 s): across the halves the largest distance was 0.33
before the cut, rose every cut round to about 0.91 (never cut: 0.32 at that round), fell back
to 0.28 at the end (never cut: 0.27); final accuracies 0.925-0.933 against 0.928-0.942.
A half may mix one way only while cut: a peer one round ahead of its half-mate but in step
with it in time never sees the mate's model before its deadline (the mate's round lasts the
deadline plus the 1 s grace of its call to the frozen peer); the mate still mixes with it.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from murmura.node.topology_deploy import load_tables
from murmura.sim.p2p import build_p2p_experiment

pytestmark = [pytest.mark.slow, pytest.mark.network]

PEERS, ROUNDS, CUT_AFTER, CUT_ROUNDS, TIMEOUT = 6, 16, 3, 4, 0.75
FROZEN, HALVES = (0, 3), ((1, 2), (4, 5))
OTHERS = [i for half in HALVES for i in half]

CONFIG = """
[run]
name = "ring-partition"
seed = 0
rounds = {rounds}

[task]
name = "digits"

[partition]
kind = "iid"
num_clients = {peers}

[client]
epochs = 1
batch_size = 16
lr = 0.05

[evaluation]
every = {rounds}

[topology]
kind = "ring"
algorithm = "gossip"

[peers]
addresses = {addresses}
key_dir = "{keys}"
state_dir = "{state}"
round_timeout = {timeout}
round_period = 0.3
join_timeout = 60.0
"""


class Watch:
    """Polls every peer's checkpoint and keeps the model it held at the end of each round."""

    def __init__(self, peers: Any) -> None:
        self.peers = peers
        self.models: dict[int, dict[int, np.ndarray]] = {i: {} for i in range(PEERS)}

    def poll(self) -> None:
        for i in range(PEERS):
            got = self.peers.model(i)
            if got is not None:
                self.models[i].setdefault(*got)

    def until(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            self.poll()
            time.sleep(0.02)
        self.poll()

    def across(self, round_: int) -> float | None:
        """Largest distance between a peer of one half and one of the other, at ``round_``."""
        m = self.models
        if any(round_ not in m[i] for i in OTHERS):
            return None
        a, b = HALVES
        return max(float(np.linalg.norm(m[i][round_] - m[j][round_])) for i in a for j in b)

    def within(self, round_: int) -> float:
        """Largest distance between the two peers of a half, at ``round_``."""
        m = self.models
        return max(float(np.linalg.norm(m[i][round_] - m[j][round_])) for i, j in HALVES)

    def last_across(self, rounds: range) -> tuple[int, float]:
        """The latest round of ``rounds`` every non-frozen peer was seen at, and ``across``."""
        for r in reversed(rounds):
            d = self.across(r)
            if d is not None:
                return r, d
        raise AssertionError(f"no round of {rounds} seen at every peer of both halves")


def spread(models: list[np.ndarray]) -> float:
    """Largest distance between two of ``models``."""
    return max(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(models, 2))


def never_cut(config: Any) -> tuple[dict[int, float], float, list[float]]:
    """The same ring never cut (in-process simulation, same mixing): ``across`` by round,
    final ``spread`` and final accuracies."""
    cfg, _ = load_tables(config)
    sim = build_p2p_experiment(cfg).simulation
    across: dict[int, float] = {}
    for r in range(1, ROUNDS + 1):
        sim.run_round(r, final=r == ROUNDS)
        x = sim.x.astype(np.float64)
        a, b = HALVES
        across[r] = max(float(np.linalg.norm(x[i] - x[j])) for i in a for j in b)
    accs = [float(sim.evaluate_fn(x).metrics["accuracy"]) for x in sim.x]
    return across, spread(list(sim.x.astype(np.float64))), accs


def cut_rounds(lines: list[dict[str, Any]]) -> list[int]:
    """Rounds in which a peer mixed without a frozen neighbour."""
    frozen = {f"peer-{i}" for i in FROZEN}
    return [m["round"] for m in lines if frozen & set(m["missing"])]


def test_partitioned_ring_runs_on_and_converges_again_after_it_heals(
    peer_procs: Callable[..., Any],
) -> None:
    t0 = time.monotonic()
    peers = peer_procs(PEERS, CONFIG, rounds=ROUNDS, timeout=TIMEOUT)
    watch = Watch(peers)
    for i in range(PEERS):
        peers.start(i)
    watch.until(lambda: all(peers.last_round(i) >= CUT_AFTER for i in range(PEERS)), 120, "round 3")
    for i in FROZEN:
        peers.procs[i].send_signal(signal.SIGSTOP)
    t_cut = time.monotonic()
    frozen_at = {i: peers.last_round(i) for i in FROZEN}
    began = {i: peers.last_round(i) for i in OTHERS}
    watch.until(
        lambda: all(peers.last_round(i) >= began[i] + CUT_ROUNDS for i in OTHERS),
        60,
        "the halves to run while cut",
    )
    assert {i: peers.last_round(i) for i in FROZEN} == frozen_at  # really frozen
    healed_at = max(peers.last_round(i) for i in OTHERS)
    for i in FROZEN:
        peers.procs[i].send_signal(signal.SIGCONT)
    t_heal = time.monotonic()
    watch.until(lambda: all(p.poll() is not None for p in peers.procs.values()), 120, "every peer")
    t_end = time.monotonic()
    print(f"seconds: start {t_cut - t0:.1f}, cut {t_heal - t_cut:.1f}, healed {t_end - t_heal:.1f}")
    for i, p in peers.procs.items():
        assert p.returncode == 0, peers.log(i)
    lines = {i: peers.metrics(i) for i in range(PEERS)}

    # (a) No deadlock: while cut, the others ran every round, each bounded by the deadline
    # (plus the 1 s grace of the call), mixing with their half-mate only.
    cut: dict[int, list[int]] = {}
    for i in OTHERS:
        assert [m["round"] for m in lines[i]] == list(range(1, ROUNDS + 1))
        # a neighbour that missed a deadline under load before the freeze is not the cut
        cut[i] = [r for r in cut_rounds(lines[i]) if r >= began[i]]
        assert len(cut[i]) >= CUT_ROUNDS and cut[i] == list(range(cut[i][0], cut[i][-1] + 1))
        mate = next(f"peer-{j}" for half in HALVES for j in half if i in half and j != i)
        for m in lines[i]:
            if m["round"] in cut[i]:
                assert set(m["neighbours"]) <= {mate} and m["seconds"] < TIMEOUT + 2.5, m
    for half in HALVES:  # a half still mixes inside, at least one way (see the docstring)
        mixed = [m["round"] for i in half for m in lines[i] if m["round"] in cut[i]]
        inside = [
            m["round"] for i in half for m in lines[i] if m["round"] in cut[i] and m["neighbours"]
        ]
        print(f"half {half}: cut rounds {mixed}, mixed with the mate in {inside}")
        assert len(inside) >= min(len(cut[i]) for i in half)
    first_cut, last_cut = min(c[0] for c in cut.values()), max(c[-1] for c in cut.values())
    assert last_cut < ROUNDS - 4  # room left to heal

    # (c) The frozen peers woke up, jumped to their neighbours' round (each round at most
    # once, none of them reused) and mixed with both again; the neighbours mixed with them.
    for i in FROZEN:
        rounds = [m["round"] for m in lines[i]]
        assert rounds == sorted(set(rounds)) and rounds[-1] == ROUNDS
        assert "rejoining there" in peers.log(i)
        woke = [m for m in lines[i] if m["round"] > frozen_at[i]]
        assert any(r not in rounds for r in range(frozen_at[i] + 1, healed_at))  # it jumped
        assert len(woke[-1]["neighbours"]) == 2 and not woke[-1]["missing"]
    for i in OTHERS:
        assert all(not m["missing"] for m in lines[i][-3:]), lines[i][-3:]

    # (b) The halves drifted apart while cut, (c) and came back together after.
    pre_round, pre = watch.last_across(range(1, first_cut))
    cut_round, during = watch.last_across(range(first_cut, last_cut + 1))
    finals = [peers.model(i) for i in range(PEERS)]
    assert all(f is not None and f[0] == ROUNDS for f in finals)
    end = spread([f[1] for f in finals if f is not None])
    base_across, base_spread, base_accs = never_cut(peers.config)
    trace = {r: watch.across(r) for r in range(1, ROUNDS + 1)}
    print(f"across-halves distance by round: {trace}")
    print(
        f"cut rounds {first_cut}..{last_cut}; across halves: before {pre:.3f} (round "
        f"{pre_round}), while cut {during:.3f} (round {cut_round}, within a half "
        f"{watch.within(cut_round):.3f}); largest pairwise distance at the end {end:.3f}"
    )
    print(f"never cut, across halves by round: {base_across}")
    assert during > 2 * pre and during > 2 * base_across[cut_round]
    assert end < during / 2 and end < 1.5 * base_spread

    accs = [float(m[-1]["test_accuracy"]) for m in lines.values()]
    print(f"never cut: spread {base_spread:.3f}, accuracy {base_accs}; cut: accuracy {accs}")
    assert min(accs) > min(base_accs) - 0.03
