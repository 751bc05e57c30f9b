"""One peer's logic in peer-to-peer learning: train locally, send, mix with neighbours.

Nothing here knows how models travel, so the in-process simulation (``murmura.sim.p2p``)
and a networked peer share it. A round is D-PSGD's "local step(s), then mix"
(Lian et al. 2017) or gossip learning's "local epochs, then mix"; robust mixing is
ClippedGossip (He, Karimireddy & Jaggi 2022) or any rule of ``murmura.aggregate`` applied to
the neighbourhood. Byzantine behaviour is a ``Sender``: it changes only what a peer sends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import torch

from murmura.aggregate import AGGREGATORS
from murmura.aggregate.base import ClientAware
from murmura.aggregate.preaggregation import make_rule
from murmura.aggregate.rule_checks import P2P_HISTORY
from murmura.client import FlatModel, LocalSGD, train_local_sgd, with_overrides
from murmura.engine.peer_round import Mixer
from murmura.errors import ConfigError
from murmura.seeding import client_generator, derive_seed
from murmura.tasks.base import Task
from murmura.topology import adaptive_tau, clipped_mix, renormalize, robust_neighbourhood_mix
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

Algorithm = Literal["dpsgd", "gossip"]


def present_weights(
    node: int, received: Mapping[int, Vector], weights: Mapping[int, float]
) -> tuple[list[int], Vector, float]:
    """Neighbours that sent a model, their weights, and the self weight after renormalising.

    A neighbour that did not answer is skipped and its weight goes back to ``node``.
    """
    row = renormalize(weights, node, set(received))
    others = sorted(j for j in row if j != node)
    return others, np.asarray([row[j] for j in others], dtype=np.float64), row[node]


def weighted_mix(
    node: int, own: Vector, received: Mapping[int, Vector], weights: Mapping[int, float]
) -> Vector:
    """Plain gossip: ``w_ii x_i + sum_j w_ij x_j`` over the neighbours present."""
    others, w, w_self = present_weights(node, received, weights)
    out = w_self * np.asarray(own, dtype=np.float64)
    for j, wj in zip(others, w, strict=True):
        out += wj * np.asarray(received[j], dtype=np.float64)
    return out.astype(np.float32)


@dataclass(frozen=True, slots=True)
class ClippedMixer:
    """ClippedGossip: each neighbour's pull clipped to radius ``tau`` (adaptive when None).

    The adaptive radius clips the farthest neighbours holding up to ``clip_weight`` of the
    row's neighbour weight (``murmura.topology.adaptive_tau``).
    """

    tau: float | None = None
    clip_weight: float = 0.25

    def __call__(
        self, node: int, own: Vector, received: Mapping[int, Vector], weights: Mapping[int, float]
    ) -> Vector:
        """The clipped mix of ``own`` with the neighbours present."""
        others, w, _ = present_weights(node, received, weights)
        if not others:
            return np.array(own, dtype=np.float32)
        nbrs = np.stack([received[j] for j in others])
        tau = self.tau
        if tau is None:
            tau = adaptive_tau(own, nbrs, w, self.clip_weight * float(w.sum()))
        return clipped_mix(np.asarray(own, dtype=np.float32), nbrs, w, tau)


@dataclass(frozen=True, slots=True)
class AggregatorMixer:
    """A robust rule of ``murmura.aggregate`` over own model plus neighbours', MH-weighted.

    ``pre`` (``[strategy] pre_aggregation``) is applied to the neighbourhood before the rule.
    """

    rule: str
    params: Mapping[str, Any]
    pre: str = "none"
    pre_params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(
        self, node: int, own: Vector, received: Mapping[int, Vector], weights: Mapping[int, float]
    ) -> Vector:
        """The rule applied to ``[own, neighbours...]`` with weights ``[w_ii, w_ij...]``."""
        others, w, w_self = present_weights(node, received, weights)
        if not others:
            return np.array(own, dtype=np.float32)
        agg = make_rule(self.rule, self.params, self.pre, self.pre_params)
        nbrs = np.stack([received[j] for j in others])
        return robust_neighbourhood_mix(own, nbrs, agg, np.concatenate([[w_self], w]))


def make_mixer(
    robust: str = "none",
    *,
    tau: float | None = None,
    clip_weight: float = 0.25,
    params: Mapping[str, Any] | None = None,
    pre: str = "none",
    pre_params: Mapping[str, Any] | None = None,
) -> Mixer:
    """``"none"`` (plain gossip), ``"clipped"`` (ClippedGossip) or an aggregator's name.

    With a pre-aggregation ``pre``, plain gossip becomes the weighted mean of the
    pre-aggregated neighbourhood; ClippedGossip has no rows to pre-aggregate and refuses it.
    """
    if pre != "none" and robust in ("none", "clipped"):
        if robust == "clipped":
            raise ConfigError(
                f"strategy.pre_aggregation = {pre!r} is not applied by a peer with "
                "topology.robust = 'clipped'; use 'none' or a rule name"
            )
        make_rule("weighted_mean", {}, pre, pre_params or {})
        return AggregatorMixer("weighted_mean", {}, pre, dict(pre_params or {}))
    if robust == "none":
        return weighted_mix
    if robust == "clipped":
        if tau is not None and tau <= 0:
            raise ConfigError(f"topology.tau must be > 0, got {tau}")
        if not 0 <= clip_weight < 1:
            raise ConfigError(f"topology.clip_weight must be in [0, 1), got {clip_weight}")
        return ClippedMixer(tau, clip_weight)
    if robust not in AGGREGATORS:
        valid = ", ".join(["none", "clipped", *AGGREGATORS.names()])
        raise ConfigError(f"unknown topology.robust {robust!r}; valid: {valid}")
    if isinstance(make_rule(robust, params or {}, pre, pre_params or {}), ClientAware):
        raise ConfigError(
            f"topology.robust = {robust!r} is not applied by a P2P peer: {P2P_HISTORY}"
        )
    return AggregatorMixer(robust, dict(params or {}), pre, dict(pre_params or {}))


@dataclass(frozen=True, slots=True)
class LocalWork:
    """How much a peer trains between two exchanges.

    ``dpsgd``: ``steps`` minibatches drawn from the peer's own endless shuffled stream, so
    successive rounds walk through its epochs; ``gossip``: ``hp.epochs`` full local epochs.
    """

    algorithm: Algorithm
    hp: LocalSGD
    steps: int = 1

    def __post_init__(self) -> None:
        if self.algorithm not in ("dpsgd", "gossip"):
            raise ConfigError(f"unknown algorithm {self.algorithm!r}; valid: dpsgd, gossip")
        if self.steps < 1:
            raise ConfigError(f"local steps must be >= 1, got {self.steps}")


class PeerLearner:
    """A peer's local training as a ``Learner``: its own data, seeded streams and a shared model.

    Peers of one process share a ``FlatModel`` scratch (they train one at a time).
    """

    def __init__(
        self,
        peer: int,
        x: torch.Tensor,
        y: torch.Tensor,
        task: Task,
        model: FlatModel,
        work: LocalWork,
        seed: int,
    ) -> None:
        if len(x) == 0:
            raise ConfigError(f"peer {peer} holds no training data")
        self.peer, self.node_id = peer, f"peer-{peer}"
        self.x, self.y, self.task, self.model, self.work, self.seed = x, y, task, model, work, seed
        self.hp = work.hp
        self._stream = torch.Generator().manual_seed(derive_seed(seed, peer, 1))
        self._queue = torch.empty(0, dtype=torch.int64)

    @property
    def num_examples(self) -> int:
        """Training examples this peer holds."""
        return len(self.x)

    @property
    def local_steps(self) -> int | None:
        """D-PSGD: ``work.steps`` minibatches a round; gossip: None (``hp.epochs`` epochs)."""
        return None if self.work.algorithm == "gossip" else self.work.steps

    def local_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training inputs and labels of this peer."""
        return self.x, self.y

    def generator(self, round_: int) -> torch.Generator:
        """The random stream of this peer in ``round_``."""
        return client_generator(self.seed, round_, self.peer)

    def fit(self, ins: FitIns) -> FitRes:
        """Train from ``ins.weights``; return the change and the mean training loss."""
        start = torch.from_numpy(np.asarray(ins.weights, dtype=np.float32))
        self.model.flat.copy_(start)
        hp, gen = with_overrides(self.hp, ins.config), self.generator(ins.round)
        if self.local_steps is None:
            loss = train_local_sgd(self.model, self.task, self.x, self.y, hp, gen)
        else:
            idx = self._next_indices(self.local_steps * hp.batch_size)
            hp = replace(hp, epochs=1)
            loss = train_local_sgd(self.model, self.task, self.x[idx], self.y[idx], hp, gen)
        delta = (self.model.flat - start).numpy()
        return FitRes(update=delta, num_examples=len(self.x), metrics={"train_loss": loss})

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """A peer holds no held-out data of its own: evaluates on nothing (0 examples).

        P2P runs score peers on the task's test set instead (``evaluate_fn``).
        """
        return EvaluateRes(loss=0.0, num_examples=0)

    def state_dict(self) -> dict[str, object]:
        """The D-PSGD sample stream's position (generator state, indices queued), to resume."""
        return {
            "kind": "peer_learner",
            "stream": self._stream.get_state().numpy().copy(),
            "queue": self._queue.numpy().copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the sample stream; a state of another kind is refused."""
        if state.get("kind") != "peer_learner":
            raise ValueError(f"state is of kind {state.get('kind')!r}, expected 'peer_learner'")
        self._stream.set_state(torch.from_numpy(np.asarray(state["stream"], dtype=np.uint8)))
        self._queue = torch.from_numpy(np.asarray(state["queue"], dtype=np.int64).copy())

    def _next_indices(self, count: int) -> torch.Tensor:
        """The next ``count`` sample indices of an endless per-epoch reshuffled stream."""
        while len(self._queue) < count:
            perm = torch.randperm(len(self.x), generator=self._stream)
            self._queue = torch.cat([self._queue, perm])
        out, self._queue = self._queue[:count], self._queue[count:]
        return out
