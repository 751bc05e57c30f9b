"""Peer-to-peer learning simulated in one process: every peer trains, sends, and mixes.

Peer models are the rows of one ``(n, d)`` float32 matrix. A round is synchronous: each peer
trains from its row (``murmura.peer_learner``), sends a model (honest, or a Byzantine
``RoundSender``'s), and mixes what its neighbours sent with its mixing row; D-PSGD
(Lian et al. 2017) and gossip learning differ only in the local work between exchanges.
With ``[privacy]`` every peer is wrapped by ``murmura.privacy.wiring.private_learners``
(local DP, DP-SGD; the wrappers of the star) and the run spends the budgets once per round,
stopping before a ``target_epsilon`` would be passed. Every peer is built by
``murmura.compose.peer``, as the deployed peer (``murmura peer``) is, so both train and
privatise identically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from murmura.attacks.base import choose_byzantine
from murmura.attacks.peer_sender import RoundSender, peer_attack
from murmura.compose.peer import gossip_codec, peer_learners, peer_mixer, topology_graph
from murmura.compose.workload import central_test, workload
from murmura.compress.accounting import dense_bytes, round_bytes
from murmura.compress.choco import ChocoGossip, gossip_bytes
from murmura.config import Config, TopologySection
from murmura.engine.peer_round import Mixer, local_step, message, mix
from murmura.engine.run_loop import History, RoundCallback, evaluates, is_final, run_simulation
from murmura.errors import ConfigError
from murmura.learner import Learner
from murmura.peer_learner import weighted_mix
from murmura.privacy.budget import PrivacyBudget
from murmura.seeding import round_rng
from murmura.sim.experiment import Experiment
from murmura.topology import (
    consensus_distance,
    describe,
    metropolis_hastings,
    random_matching,
)
from murmura.types import EvaluateRes, Failure, RoundMetrics, Vector

log = logging.getLogger(__name__)
EvaluateFn = Callable[[Vector], EvaluateRes]


@dataclass(frozen=True, slots=True)
class P2POptions:
    """How peers exchange: robust mixing, Byzantine senders, time-varying graph, failures.

    ``byzantine`` maps a peer to the ``RoundSender`` that replaces its honest messages;
    ``dropout`` is the chance that a peer misses a round's exchange (it keeps training, its
    neighbours skip it and renormalise their weights). ``budgets`` (differential privacy)
    are spent once per round; the run stops before a round would take one past its target.
    """

    mixer: Mixer = weighted_mix
    byzantine: Mapping[int, RoundSender] = field(default_factory=dict)
    time_varying: bool = False
    dropout: float = 0.0
    seed: int = 0
    evaluate_every: int = 1
    budgets: Sequence[PrivacyBudget] = ()
    choco: ChocoGossip | None = None
    """``[compression] uplink``: peers exchange compressed differences (CHOCO-gossip)."""

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class P2PSimulation:
    """Synchronous decentralised training of ``n`` peers on a communication graph.

    ``initial_weights`` is one model every peer starts from, or an ``(n, d)`` matrix of
    per-peer starting models.
    """

    def __init__(
        self,
        graph: nx.Graph,
        learners: Sequence[Learner],
        initial_weights: Vector,
        options: P2POptions | None = None,
        evaluate_fn: EvaluateFn | None = None,
    ) -> None:
        n = graph.number_of_nodes()
        if len(learners) != n:
            raise ValueError(f"graph has {n} nodes but {len(learners)} learners were given")
        self.graph, self.learners = graph, list(learners)
        self.options = options or P2POptions()
        bad = [i for i in self.options.byzantine if not 0 <= i < n]
        if bad:
            raise ValueError(f"Byzantine peers {bad} outside 0..{n - 1}")
        self.mixing = metropolis_hastings(graph)
        start = np.asarray(initial_weights, dtype=np.float32)
        self.x = start.copy() if start.ndim == 2 else np.tile(start, (n, 1))
        if self.x.shape[0] != n:
            raise ValueError(f"initial weights for {self.x.shape[0]} peers, graph has {n}")
        self.evaluate_fn = evaluate_fn
        self.honest = [i for i in range(n) if i not in self.options.byzantine]

    @property
    def num_peers(self) -> int:
        """Number of peers."""
        return int(self.x.shape[0])

    def average(self) -> Vector:
        """The average of the honest peers' models."""
        return np.asarray(self.x[self.honest].mean(axis=0), dtype=np.float32)

    def run(self, rounds: int, on_round: RoundCallback | None = None, start: int = 1) -> History:
        """Run rounds ``start..rounds``; ``on_round`` sees the metrics and the average model."""
        return run_simulation(self, rounds, on_round, start)

    def stops(self, round_: int) -> bool:
        """Whether one more round would take a privacy budget past its target."""
        return any(b.would_exceed() for b in self.options.budgets)

    def model(self) -> Vector:
        """The honest peers' average model."""
        return self.average()

    def run_round(self, round_: int, final: bool = False) -> RoundMetrics:
        """Train every peer, exchange along this round's graph, mix; report the metrics."""
        t0 = time.perf_counter()
        rng = round_rng(self.options.seed, round_)
        w = random_matching(self.num_peers, rng, self.graph) if self.options.time_varying else None
        missing = self._draw_missing(rng)
        trained, losses = self._train_all(round_)
        mixing = w if w is not None else self.mixing
        choco = self.options.choco
        if choco is None:
            sent = self._messages(round_, trained, missing)
            self.x = self._mix_all(mixing, trained, sent, missing)
            sizes = {i: float(dense_bytes(self.x.shape[1])) for i in sent}
        else:
            present = [i for i in range(self.num_peers) if i not in missing]
            sizes = {i: float(b) for i, b in choco.exchange(round_, trained, present).items()}
            self.x = choco.mix(mixing, trained, present)
        failures = [Failure(f"peer-{i}", "missed this round's exchange") for i in sorted(missing)]
        metrics = RoundMetrics(
            round_, participants=self.num_peers - len(missing), failures=failures
        )
        honest_losses = [losses[i] for i in self.honest]  # NaN: not reported (local DP)
        if not np.isnan(honest_losses).all():
            metrics.train_loss = float(np.mean(honest_losses))
        metrics.extra.update(round_bytes(*gossip_bytes(mixing, sizes)))
        metrics.extra["consensus_distance"] = consensus_distance(self.x[self.honest])
        for budget in self.options.budgets:
            budget.spend()
            metrics.extra.update(budget.metrics())
        if round_ == 1:  # the graph, its degrees and spectral gap, reported once at the start
            metrics.extra["topology"] = describe(self.graph)
        if evaluates(round_, self.options.evaluate_every, is_final(round_, final, self.stops)):
            self._evaluate(metrics)
        metrics.seconds = time.perf_counter() - t0
        log.info(
            "round %d: acc %s, consensus distance %.4g, %d missing",
            round_,
            metrics.test_accuracy,
            metrics.extra["consensus_distance"],
            len(missing),
        )
        return metrics

    def _draw_missing(self, rng: np.random.Generator) -> set[int]:
        if self.options.dropout == 0:
            return set()
        return {int(i) for i in np.flatnonzero(rng.random(self.num_peers) < self.options.dropout)}

    def _train_all(self, round_: int) -> tuple[np.ndarray, list[float]]:
        trained = np.empty_like(self.x)
        losses = []
        for i, learner in enumerate(self.learners):
            trained[i], loss = local_step(learner, self.x[i], round_)
            losses.append(loss)
        return trained, losses

    def _messages(
        self, round_: int, trained: np.ndarray, missing: Collection[int]
    ) -> dict[int, Vector]:
        """What each present peer sends; a non-finite message is dropped like a missing peer."""
        out: dict[int, Vector] = {}
        for i in range(self.num_peers):
            if i in missing:
                continue
            msg = message(round_, self.x[i], trained[i], self.options.byzantine.get(i))
            if np.isfinite(msg).all():
                out[i] = np.asarray(msg, dtype=np.float32)
        return out

    def _mix_all(
        self, w: np.ndarray, trained: np.ndarray, sent: Mapping[int, Vector], missing: set[int]
    ) -> np.ndarray:
        out = trained.copy()
        for i in range(self.num_peers):
            if i in missing:
                continue
            row = {int(j): float(w[i, j]) for j in np.flatnonzero(w[i])} | {i: float(w[i, i])}
            out[i] = mix(self.options.mixer, i, trained[i], sent, row)
        return out

    def _evaluate(self, metrics: RoundMetrics) -> None:
        """Mean test accuracy over honest peers, its spread, and the average model's."""
        if self.evaluate_fn is None:
            return
        results = [self.evaluate_fn(self.x[i]) for i in self.honest]
        accs = np.asarray([r.metrics.get("accuracy", np.nan) for r in results])
        metrics.test_accuracy = float(accs.mean())
        metrics.test_loss = float(np.mean([r.loss for r in results]))
        metrics.extra.update(
            accuracy_std=float(accs.std()),
            accuracy_min=float(accs.min()),
            accuracy_max=float(accs.max()),
            average_model_accuracy=self.evaluate_fn(self.average()).metrics.get("accuracy"),
        )


def byzantine_senders(t: TopologySection, graph: nx.Graph, seed: int) -> dict[int, RoundSender]:
    """Peers ``byzantine_peers``, else those ``choose_byzantine`` picks, get the attack.

    Each runs ``[topology] attack`` with ``attack_args`` through the sender a deployed
    red-team peer uses (``murmura.attacks.peer_sender``), sized by its own neighbourhood.
    """
    n = graph.number_of_nodes()
    if t.byzantine_peers is not None:
        chosen = sorted(set(t.byzantine_peers))
        if any(not 0 <= i < n for i in chosen):
            raise ConfigError(f"topology.byzantine_peers {chosen}: peers are 0..{n - 1}")
    else:
        chosen = choose_byzantine(n, t.byzantine_fraction, seed)
    if not chosen or t.attack == "none":
        return {}
    if len(chosen) == n:
        raise ConfigError(f"topology.byzantine_fraction {t.byzantine_fraction}: no honest peer")
    try:
        return {
            i: peer_attack(t.attack, t.attack_args, f"peer-{i}", graph.degree(i), seed)
            for i in chosen
        }
    except ConfigError as exc:
        raise ConfigError(f"topology.attack = {t.attack!r}, attack_args: {exc}") from None


def build_p2p_experiment(cfg: Config) -> Experiment:
    """The P2P run ``cfg`` describes, as an ``Experiment`` whose simulation is peer-to-peer.

    Every peer is the deployed peer's (``murmura.compose.peer``): graph, learner, mixer, codec.
    """
    t = cfg.topology  # [attack] is refused for peer-to-peer when the config loads
    w = workload(cfg, held_out=False)
    graph = topology_graph(t, w.data.num_clients)
    n = graph.number_of_nodes()
    learners, budgets = peer_learners(cfg, w.task, w.data, n, w.model)
    gossip, choco = gossip_codec(cfg), None  # [compression] uplink: CHOCO-gossip
    if gossip is not None:
        codec, step = gossip
        choco = ChocoGossip(codec, np.tile(w.model.get(), (n, 1)), step, cfg.run.seed)
    options = P2POptions(
        mixer=peer_mixer(cfg),
        byzantine=byzantine_senders(t, graph, cfg.run.seed),
        time_varying=t.time_varying,
        dropout=t.dropout,
        seed=cfg.run.seed,
        evaluate_every=cfg.evaluation.every,
        budgets=budgets,
        choco=choco,
    )
    log.info("topology %s (%s, robust %s): %s", t.kind, t.algorithm, t.robust, describe(graph))
    if options.byzantine:
        log.info("Byzantine peers (%s): %s", t.attack, sorted(options.byzantine))
    sim = P2PSimulation(graph, learners, w.model.get(), options, central_test(w))
    return Experiment(cfg, w.task, w.data, w.model, sim)


def run_p2p(cfg: Config, on_round: RoundCallback | None = None) -> History:
    """Run the P2P experiment of ``cfg``: per-round metrics and the honest peers' average."""
    exp = build_p2p_experiment(cfg)
    return exp.simulation.run(cfg.run.rounds, on_round=on_round)
