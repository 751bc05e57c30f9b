"""Attacks as clients, for the star and the tree: one wrapper per attack kind, and selection.

``attack_client(inner, attack)`` poisons ``inner``'s training data (a ``DataAttack``),
replaces its result (an ``UpdateAttack``), or holds its result back for the round loop to
``craft`` from the honest ones (an ``OmniscientAttack``; ``murmura.sim.runtime`` for the star
and every tree edge). Strategies never see the difference.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from murmura.aggregate.distances import one_blas_thread
from murmura.attacks.base import (
    AttackContext,
    DataAttack,
    OmniscientAttack,
    RoundView,
    UpdateAttack,
    choose_byzantine,
    make_attack,
)
from murmura.client import Client, TorchClient
from murmura.data.federated import Batch, FederatedDataset
from murmura.errors import ConfigError
from murmura.types import EvaluateRes, FitIns, FitRes, Vector

if TYPE_CHECKING:  # the round loops hand attackers this view; a type, not an import cycle
    from murmura.engine.server_round import HonestView

log = logging.getLogger(__name__)


class PoisonedData:
    """A view of a ``FederatedDataset`` whose training data ``attack`` poisons; test data is not."""

    def __init__(self, data: FederatedDataset, attack: DataAttack) -> None:
        self.data, self.attack = data, attack

    @property
    def num_clients(self) -> int:
        """How many clients hold data."""
        return self.data.num_clients

    def client_train(self, cid: int) -> Batch:
        """Client ``cid``'s poisoned inputs and labels."""
        x, y = self.data.client_train(cid)
        return self.attack.poison(x, y)

    def client_size(self, cid: int) -> int:
        """Number of training examples client ``cid`` holds."""
        return self.data.client_size(cid)

    def test(self) -> Batch:
        """The central test set, unchanged."""
        return self.data.test()


def poisoned_client(inner: Client, attack: DataAttack) -> Client:
    """A client like ``inner`` (same id, model, seed, privacy, control variate) on poisoned data."""
    from murmura.privacy.dp_client import DPSGDClient
    from murmura.strategy.scaffold import ScaffoldClient

    if isinstance(inner, ScaffoldClient):  # keep SCAFFOLD's control variate around it
        return ScaffoldClient(_poisoned_torch(inner.inner, attack))
    if isinstance(inner, DPSGDClient) and isinstance(inner.inner, TorchClient):
        # [privacy] dp_sgd: the attacker still trains with DP-SGD, on its poisoned data
        return DPSGDClient(_poisoned_torch(inner.inner, attack), inner.dp)
    if not isinstance(inner, TorchClient):
        raise ConfigError(f"a data attack poisons a TorchClient's data, got {type(inner).__name__}")
    return _poisoned_torch(inner, attack)


def _poisoned_torch(inner: TorchClient, attack: DataAttack) -> TorchClient:
    data = PoisonedData(inner.data, attack)
    return TorchClient(inner.cid, data, inner.task, inner.model, inner.hp, seed=inner.seed)


class AttackingClient:
    """Trains honestly (or on poisoned data), then sends what the attack makes of its result.

    With an ``OmniscientAttack`` its ``fit`` is its own result, which the round loop holds
    back and passes to ``craft`` with the round's honest updates.
    """

    def __init__(self, inner: Client, attack: object) -> None:
        self.inner, self.attack, self.node_id = inner, attack, inner.node_id

    def fit(self, ins: FitIns) -> FitRes:
        """The inner result, corrupted by an ``UpdateAttack``."""
        res = self.inner.fit(ins)
        if isinstance(self.attack, UpdateAttack):
            return self.attack.corrupt(ins.round, self.node_id, res)
        return res

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Evaluation is left honest."""
        return self.inner.evaluate(weights)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.node_id!r}, {type(self.attack).__name__})"


class ForgeCache:
    """The round's forged updates, shared by the round's attackers.

    Equal attacks on equal honest updates forge once: a line search against the rule runs
    once a round, not once per attacker.
    """

    def __init__(self) -> None:
        self._round = -1
        self._forged: dict[tuple[object, ...], Vector] = {}

    def forge(self, attack: OmniscientAttack, view: RoundView) -> Vector:
        """``attack.forge(view)``, remembered for this round (keyed by content, not identity)."""
        if view.round != self._round:
            self._round, self._forged = view.round, {}
        own = view.own if isinstance(attack, DataAttack) else None  # only then does own count
        digest = hashlib.blake2b(view.honest.tobytes(), digest_size=16)
        if view.weights is not None:
            digest.update(np.ascontiguousarray(view.weights).tobytes())
        if own is not None:
            digest.update(np.ascontiguousarray(own).tobytes())
        key = (attack, view.num_byzantine, view.honest.shape, digest.hexdigest())
        if key not in self._forged:
            with one_blas_thread():  # many-threaded BLAS on small matrices only spins
                self._forged[key] = attack.forge(view)
        return self._forged[key].copy()


class OmniscientAttacker(AttackingClient):
    """An ``AttackingClient`` whose attack forges its update from the honest ones."""

    def __init__(self, inner: Client, attack: object, cache: ForgeCache | None = None) -> None:
        super().__init__(inner, attack)
        self.cache = cache if cache is not None else ForgeCache()

    def craft(self, view: HonestView, own: FitRes) -> FitRes:
        """The forged update; with no honest update to look at, its own result."""
        if not view.updates:
            return own
        assert isinstance(self.attack, OmniscientAttack)
        honest = np.stack([np.asarray(u, dtype=np.float32) for u in view.updates])
        counts = [*view.num_examples, *view.byzantine_examples]
        weights = None
        if len(counts) == len(honest) + view.num_byzantine:
            weights = np.asarray(counts, dtype=np.float32)
        rv = RoundView(
            view.round, honest, own.update, view.num_byzantine, tuple(view.nodes), weights
        )
        return FitRes(self.cache.forge(self.attack, rv), own.num_examples, own.metrics)


def attack_client(inner: Client, attack: object, cache: ForgeCache | None = None) -> Client:
    """``inner`` turned attacker: poisoned data first, then the update or omniscient part."""
    if isinstance(attack, DataAttack):
        inner = poisoned_client(inner, attack)
    if isinstance(attack, OmniscientAttack):
        return OmniscientAttacker(inner, attack, cache)
    if isinstance(attack, UpdateAttack):
        return AttackingClient(inner, attack)
    return inner


def wrap_byzantine(
    clients: Sequence[Client],
    kind: str,
    fraction: float,
    params: Mapping[str, Any],
    ctx: AttackContext,
) -> tuple[list[Client], list[str]]:
    """``clients`` with a seeded ``fraction`` turned into attack ``kind``; and their node ids.

    Each attacker gets its own attack object (its index among the attackers in ``ctx``);
    the omniscient ones share a ``ForgeCache``.
    """
    chosen = choose_byzantine(len(clients), fraction, ctx.seed)
    make_attack(kind, ctx, params)  # a bad parameter fails even when nobody is chosen
    cache = ForgeCache()
    out = [
        attack_client(c, attack, cache)
        if (attack := attacker_attack(kind, params, ctx, chosen, i)) is not None
        else c
        for i, c in enumerate(clients)
    ]
    byzantine = [clients[i].node_id for i in chosen]
    log.info("attack %s: %d of %d clients are Byzantine", kind, len(byzantine), len(clients))
    return out, byzantine


def attacker_attack(
    kind: str, params: Mapping[str, Any], ctx: AttackContext, chosen: Sequence[int], client: int
) -> object | None:
    """Client ``client``'s own attack object when ``chosen`` holds it, else None.

    The one rule for simulated clients (``wrap_byzantine``) and deployed workers
    (``murmura.attacks.wiring.attacking_learner``): the attacker's index among ``chosen``
    and their number go into its context.
    """
    if client not in chosen:
        return None
    ctx = replace(ctx, attacker=list(chosen).index(client), num_attackers=len(chosen))
    return make_attack(kind, ctx, params)
