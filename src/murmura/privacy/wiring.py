"""From a ``[privacy]`` config to the pieces that deliver it: strategy, clients, budgets.

- ``mode = "central"``: DP-FedAvg (McMahan et al. 2018) around the configured FedAvg-family
  strategy, with Poisson sampling at ``strategy.fraction``; optional adaptive clipping
  (Andrew et al. 2021) and example weights capped at ``weight_cap``.
- ``mode = "local"``: every client clips and noises its delta (``LocalDPClient``); the budget
  assumes a client releases in every round (the server sees who sent, so no amplification).
- ``dp_sgd = true``: sample-level DP-SGD on every client (``DPSGDClient``, Abadi et al.
  2016); its budget, ``sample_epsilon``, is that of the smallest client (its batches are the
  largest share of its data), assuming it trains in every round.

Both wrap any ``murmura.learner.LocalLearner`` and are built by ``private_learners`` alone,
for star clients, tree leaves, simulated peers and deployed peers (``murmura peer``).

Topologies: all three modes in the star and in a tree, ``local`` and ``dp_sgd`` peer-to-peer
(each peer privatises what it shares, a peer-level guarantee against untrusted neighbours:
it keeps and sends its start model plus the privatised change, so all it shares is
post-processing of privatised releases; every peer is charged every round, q = 1).
``central`` needs a trusted noiser: it is refused for P2P. In a
tree the edges are trusted aggregators of their clients' clipped updates (``EdgeSum``) and the
root adds the noise once (``DifferentiallyPrivate(from_edges=True)``), with the star's sample,
noise, expected weight and budget.

``target_epsilon`` bounds the client-level budget (``epsilon``), or ``sample_epsilon`` when
``mode = "none"``. Without ``noise_multiplier``, the noise is planned so that ``run.rounds``
rounds reach ``target_epsilon``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from murmura.client import Client, TorchClient
from murmura.config import Config
from murmura.errors import ConfigError
from murmura.learner import Learner, LocalLearner
from murmura.privacy.accountant import create_accountant, plan_noise_multiplier
from murmura.privacy.adaptive_clipping import AdaptiveClipper
from murmura.privacy.budget import PrivacyBudget
from murmura.privacy.checks import (
    client_budget,
    client_sample_rate,
    privacy_error,
    update_noise,
)
from murmura.privacy.dp_client import DPSGDClient, DPSGDParams, dp_sgd_schedule
from murmura.privacy.local import CLIENT_NOISE, LocalDPClient
from murmura.privacy.mechanisms import CentralDP
from murmura.strategy.base import Strategy
from murmura.strategy.dp import Accounted, DifferentiallyPrivate, client_weights

log = logging.getLogger(__name__)


def resolve_noise_multiplier(cfg: Config) -> float:
    """The configured client-level noise multiplier, or the one planned for the target."""
    p = cfg.privacy
    if p.noise_multiplier is not None:
        return p.noise_multiplier
    assert p.target_epsilon is not None  # check_privacy refuses neither
    plan = plan_noise_multiplier(
        p.target_epsilon, p.delta, cfg.run.rounds, client_sample_rate(cfg), p.accountant
    )
    log.info(
        "privacy: planned noise multiplier %.4g (epsilon %.4g)", plan.noise_multiplier, plan.epsilon
    )
    return plan.noise_multiplier


def _central(
    cfg: Config, inner: Strategy, clients: Sequence[TorchClient], z: float
) -> DifferentiallyPrivate:
    p = cfg.privacy
    expected = cfg.strategy.fraction * len(clients)
    # the estimate divides by the expected total weight q W; client sizes are public here
    sizes = np.array([c.data.client_size(c.cid) for c in clients], dtype=np.float32)
    expected_weight = cfg.strategy.fraction * float(client_weights(sizes, p.weight_cap).sum())
    clipper, z_update = None, z
    if p.adaptive_clipping:
        z_update, count_std = update_noise(cfg, z)
        clipper = AdaptiveClipper(
            p.clip_norm,
            expected_cohort_size=expected,
            target_quantile=p.target_quantile,
            learning_rate=p.clip_learning_rate,
            count_noise_std=count_std,
        )
    mechanism = CentralDP(p.clip_norm, z_update, expected_weight)
    return DifferentiallyPrivate(
        inner,
        mechanism,
        client_budget(cfg, z),
        clipper=clipper,
        weight_cap=p.weight_cap,
        seed=cfg.run.seed,
        from_edges=cfg.topology.kind == "tree",
    )


def sample_budget(cfg: Config, rate: float, steps: int) -> PrivacyBudget:
    """DP-SGD's budget: ``steps`` Poisson-sampled Gaussian steps at ``rate`` per round."""
    p = cfg.privacy
    try:
        return PrivacyBudget(
            create_accountant(p.accountant),
            noise_multiplier=p.dp_sgd_noise_multiplier,
            sample_rate=rate,
            delta=p.delta,
            target_epsilon=p.target_epsilon if p.mode == "none" else None,
            steps_per_round=steps,
            name="sample_epsilon",
        )
    except ConfigError as exc:
        raise privacy_error("target_epsilon", str(exc)) from None


def private_learners(
    cfg: Config,
    learners: Sequence[LocalLearner],
    *,
    noise_stream: int = CLIENT_NOISE,
    first_index: int = 0,
) -> tuple[list[Learner], list[PrivacyBudget]]:
    """Local DP and DP-SGD around ``learners`` as ``cfg.privacy`` asks, with their budgets.

    The one place these wrappers are built: star clients and tree leaves
    (``apply_privacy``), simulated peers and deployed peers (``murmura.sim.p2p``), and a
    deployed worker (``murmura client --config``). The learners are returned unchanged, with
    no budget, when neither is on. Learner ``i`` of the list is noised with index
    ``first_index + i``'s stream (a worker holds one learner: the run's client
    ``first_index``).
    """
    p = cfg.privacy
    out: list[Learner] = list(learners)
    budgets: list[PrivacyBudget] = []
    if p.dp_sgd:
        dp = DPSGDParams(p.dp_sgd_clip_norm, p.dp_sgd_noise_multiplier)
        out = [DPSGDClient(learner, dp) for learner in learners]
        if learners:  # none: a files job's coordinator; each site accounts its own data
            # the smallest learner: its batches are the largest share of its data
            small = min(learners, key=lambda learner: learner.num_examples)
            schedule = dp_sgd_schedule(
                small.num_examples, small.hp.batch_size, small.hp.epochs, small.local_steps
            )
            budgets.append(sample_budget(cfg, *schedule))
    if p.mode == "local":
        z = resolve_noise_multiplier(cfg)
        out = [
            LocalDPClient(
                learner,
                client_index=first_index + i,
                clip_norm=p.clip_norm,
                noise_multiplier=z,
                seed=cfg.run.seed,
                noise_stream=noise_stream,
            )
            for i, learner in enumerate(out)
        ]
        budgets.insert(0, client_budget(cfg, z))
        log.info("privacy: local DP on every learner, C=%.4g, z=%.4g", p.clip_norm, z)
    return out, budgets


def apply_privacy(
    cfg: Config, strategy: Strategy, clients: Sequence[TorchClient]
) -> tuple[Strategy, list[Client]]:
    """The strategy and clients that ``cfg.privacy`` asks for (unchanged when it is off)."""
    p = cfg.privacy
    if p.mode == "none" and not p.dp_sgd:
        return strategy, list(clients)
    if p.mode == "central":
        strategy = _central(cfg, strategy, clients, resolve_noise_multiplier(cfg))
    out, budgets = private_learners(cfg, clients)
    if budgets:
        strategy = Accounted(strategy, budgets)
    return strategy, out
