"""The server's role: its strategy, built once for a simulated server and ``murmura server``.

A star's server runs ``[strategy]`` with central evaluation, inside central DP (and the
budgets of local DP and DP-SGD), SecAgg+ and the ``[anomaly]`` monitor; a tree's root runs
FedAvg at ``server_lr`` (or ``[strategy]`` under central DP, which releases the edges' sums)
with the budgets. The privacy budgets depend on the clients' sizes, so the server's builder
builds the clients' learners too and hands them to whoever runs them (the simulation; a
deployed server drops them: its workers build their own, the same way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from murmura.aggregate.preaggregation import strategy_rule
from murmura.attacks.breakdown import round_size
from murmura.attacks.wiring import with_attack_success, wrap_attackers
from murmura.client import Client
from murmura.compose.learner import plain_clients, with_client_state
from murmura.compose.workload import Workload, central_test, largest_client, workload
from murmura.compress.uplink import apply_compression
from murmura.config import Config
from murmura.errors import ConfigError
from murmura.privacy.secure_wiring import apply_secagg
from murmura.privacy.wiring import apply_privacy
from murmura.strategy import STRATEGIES, FedAvg, Strategy
from murmura.strategy.anomaly import AnomalyMonitor, Flagging
from murmura.strategy.steps import with_step_normalisation
from murmura.types import EvaluateRes, Vector


@dataclass(slots=True)
class Server:
    """A server's strategy and the learners it runs rounds over, from one config."""

    workload: Workload
    strategy: Strategy
    learners: list[Client]
    """The clients as the run trains them (privacy, codec, strategy state, attack)."""
    byzantine: tuple[str, ...] = ()
    """Node ids of the clients that ``[attack]`` made Byzantine (simulation ground truth)."""


def server_strategy(
    cfg: Config,
    evaluate_fn: Callable[[Vector], EvaluateRes] | None,
    *,
    fraction_evaluate: float = 0.0,
) -> Strategy:
    """The ``[strategy]`` that ``cfg`` names, with its server optimiser's parameters."""
    s = cfg.strategy
    strategy: Strategy = STRATEGIES.get(s.name)(
        fraction=s.fraction,
        min_clients=s.min_clients,
        aggregator=strategy_rule(s),
        server_lr=s.server_lr,
        seed=cfg.run.seed,
        evaluate_fn=evaluate_fn,
        fraction_evaluate=fraction_evaluate,
        min_evaluate_clients=cfg.evaluation.min_clients,
        server_momentum=s.server_momentum,
        beta1=s.beta1,
        beta2=s.beta2,
        tau=s.tau,
    )
    return with_step_normalisation(strategy, s.normalize_steps, s.max_weight_share)


def star_server(cfg: Config) -> Server:
    """A star's server over every client of the run."""
    w = workload(cfg, threads=cfg.simulation.threads)
    e = cfg.evaluation
    strategy = server_strategy(
        cfg,
        _central_evaluation(cfg, w) if e.central else None,
        fraction_evaluate=e.fraction if e.federated else 0.0,
    )
    strategy, private = apply_privacy(cfg, strategy, plain_clients(cfg, w))  # as is when off
    strategy = apply_secagg(cfg, strategy, largest_client(cfg, w.data))  # [secagg]; as is when off
    # [compression] encodes what privacy released (local DP noise before encoding)
    clients = apply_compression(cfg, private)
    clients = with_client_state(strategy, clients)
    learners, byzantine = wrap_attackers(cfg, clients, cfg.cohort_size(), w.data)
    return Server(w, flagging(cfg, strategy), learners, tuple(byzantine))


def tree_root(cfg: Config) -> Server:
    """A tree's root over its clients (which the tree's edges share out), and its rule.

    The root is FedAvg at ``server_lr``; central DP wraps the configured server rule, as in
    the star, and the edges report sums.
    """
    w = workload(cfg, held_out=False, threads=cfg.simulation.threads)
    evaluate = with_attack_success(cfg, central_test(w), w.model, w.data)  # and a backdoor's
    s = cfg.strategy
    root: Strategy = (
        server_strategy(cfg, evaluate)
        if cfg.privacy.mode == "central"
        else FedAvg(server_lr=s.server_lr, seed=cfg.run.seed, evaluate_fn=evaluate)
    )
    root, private = apply_privacy(cfg, root, plain_clients(cfg, w))
    clients = apply_compression(cfg, private)  # as in the star: encode, then attack
    # [attack] after privacy, as in the star (attackers keep DP-SGD); sized by an edge's round
    learners, byzantine = wrap_attackers(cfg, clients, round_size(cfg), w.data)
    return Server(w, root, learners, tuple(byzantine))


def flagging(cfg: Config, strategy: Strategy) -> Strategy:
    """``strategy`` under the [anomaly] monitor, if enabled (so a deployed coordinator too)."""
    a = cfg.anomaly
    if not a.enabled:
        return strategy
    return Flagging(strategy, AnomalyMonitor(a.score, a.threshold, a.rounds, a.exclude))


def _central_evaluation(cfg: Config, w: Workload) -> Callable[[Vector], EvaluateRes]:
    """Evaluation of a model on the task's central test set (and a backdoor's success rate)."""
    test = w.data.test()
    if len(test[0]) == 0:
        raise ConfigError(
            "evaluation.central = true but the task has no test set (a files task without "
            "task.args.test): set evaluation.central = false and evaluation.federated = true"
        )
    evaluate = central_test(w, test)
    if cfg.attack.kind == "none":
        return evaluate
    return with_attack_success(cfg, evaluate, w.model, w.data)
