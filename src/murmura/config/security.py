"""Config tables of attacks and defences: attack, anomaly, privacy, secagg."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from murmura.config.base import Section
from murmura.privacy.accountant import AccountantName


class AttackSection(Section):
    """[attack]: Byzantine clients (star and tree); ``kind = "none"`` disables.

    ``fraction`` of the clients, chosen by ``[run] seed``, run attack ``kind`` with ``args``
    (``murmura.attacks``: update, omniscient and aggregator-aware, data and backdoor attacks;
    a backdoor adds ``attack_success_rate`` to each evaluated round). Peer-to-peer graphs
    take their attackers from ``[topology]`` and refuse this table.
    A fraction beyond what ``strategy.aggregator`` tolerates (its breakdown point) runs, with a
    warning at load time. Deployed, ``murmura client --config`` worker ``i`` (partition
    ``i/n``) attacks when the same seeded choice picks client ``i``; the omniscient attacks,
    which forge from the round's honest updates, are simulation only (refused by the workers,
    ``murmura server`` and ``murmura edge``).
    """

    kind: str = "none"
    fraction: float = Field(0.2, ge=0, le=1)
    args: dict[str, Any] = Field(default_factory=dict)


class AnomalySection(Section):
    """[anomaly]: per-client scores each round in metrics.jsonl, and flagging (star only).

    A client is flagged once ``score`` crosses ``threshold`` (for ``cosine``: falls below it;
    for the others: rises above it) in ``rounds`` consecutive rounds it takes part in;
    ``exclude = true`` leaves flagged clients out of later rounds. ``*_ratio`` scores divide
    by the round's median, so one threshold fits any model scale.
    """

    enabled: bool = False
    score: Literal["cosine", "l2", "l2_ratio", "norm", "norm_ratio"] = "cosine"
    threshold: float = 0.0
    rounds: int = Field(3, ge=1)
    exclude: bool = False


class PrivacySection(Section):
    """[privacy]: differential privacy (see ``murmura.privacy.wiring``); off by default.

    ``mode`` "central" is DP-FedAvg with Poisson sampling at ``strategy.fraction`` (star, or a
    tree whose edges are trusted to sum their clients' clipped updates and whose root adds the
    noise once: the star's sample, noise and epsilon; a deployed edge, ``murmura edge``,
    clips every child itself and needs ``[edge] allowlist`` mapping each child to its client
    index, ``client-I`` or ``[edge] client_index``; not P2P), "local" clips and noises on
    every client, or on every peer what it shares (P2P: peer-level DP against untrusted
    neighbours); ``dp_sgd`` adds sample-level DP-SGD on the clients or peers. Without
    ``noise_multiplier`` the noise is planned for ``target_epsilon`` over ``run.rounds``; a
    run stops before ``target_epsilon`` would be exceeded, in every topology.
    """

    mode: Literal["none", "central", "local"] = "none"
    clip_norm: float = Field(1.0, gt=0)
    noise_multiplier: float | None = Field(None, ge=0)
    adaptive_clipping: bool = False
    target_quantile: float = Field(0.5, gt=0, lt=1)
    clip_learning_rate: float = Field(0.2, gt=0)
    clip_count_stddev: float | None = Field(None, gt=0)
    # central: a client's weight is min(examples / weight_cap, 1); None: every client weighs 1
    weight_cap: float | None = Field(None, gt=0)
    accountant: AccountantName = "rdp"
    delta: float = Field(1e-5, gt=0, lt=1)
    target_epsilon: float | None = Field(None, gt=0)
    dp_sgd: bool = False
    dp_sgd_clip_norm: float = Field(1.0, gt=0)
    dp_sgd_noise_multiplier: float = Field(1.0, ge=0)


SecAggStage = Literal["advertise", "share", "masked_input", "unmask"]


class SecAggSection(Section):
    """[secagg]: SecAgg+ secure aggregation (``murmura.privacy.secure_wiring``); off by default.

    ``neighbours`` (k) and ``threshold`` (t) default to ``default_neighbours`` of the cohort and
    ``default_threshold(k)``; ``clip`` is the quantisation range per coordinate (None:
    ``privacy.clip_norm`` under central DP, else 1); ``max_weight`` bounds a client's weight
    (None: the largest client's example count). ``dropout = {stage = fraction}`` simulates
    clients that stop answering at that stage (seeded by ``run.seed``), for experiments.
    """

    enabled: bool = False
    neighbours: int | None = Field(None, ge=1)
    threshold: int | None = Field(None, ge=1)
    clip: float | None = Field(None, gt=0)
    max_weight: float | None = Field(None, gt=0)
    rounding: Literal["stochastic", "deterministic"] = "stochastic"
    dropout: dict[SecAggStage, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fractions(self) -> SecAggSection:
        for stage, fraction in self.dropout.items():
            if not 0 <= fraction <= 1:
                raise ValueError(f"dropout.{stage} must be a fraction in [0, 1], got {fraction}")
        return self
