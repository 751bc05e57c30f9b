"""Run configuration: TOML files validated with pydantic; every key has a default.

Errors name the file, the key and what is allowed, and are raised before any training.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from murmura.errors import ConfigError, MurmuraError


class Section(BaseModel):
    """A config table: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(Section):
    """[run]: naming, seeding and length of the run."""

    name: str = "murmura"
    seed: int = 0
    rounds: int = Field(10, ge=1)
    out_dir: str = "runs"


class TaskSection(Section):
    """[task]: a built-in task name or ``"package.module:factory"``, and its arguments."""

    name: str = "digits"
    args: dict[str, Any] = Field(default_factory=dict)


class PartitionSection(Section):
    """[partition]: how the task's data is split across clients (None: the task's default)."""

    kind: Literal["iid", "dirichlet", "shards", "quantity", "natural"] | None = None
    num_clients: int = Field(10, ge=1)
    alpha: float = Field(0.5, gt=0)
    min_size: int = Field(1, ge=1)
    classes_per_client: int = Field(2, ge=1)
    sigma: float = Field(1.0, gt=0)

    def args(self, kind: str) -> dict[str, Any]:
        """The keyword arguments the partitioner ``kind`` takes."""
        by_kind: dict[str, dict[str, Any]] = {
            "dirichlet": {"alpha": self.alpha, "min_size": self.min_size},
            "shards": {"classes_per_client": self.classes_per_client},
            "quantity": {"sigma": self.sigma},
        }
        return by_kind.get(kind, {})


class ClientSection(Section):
    """[client]: local training hyper-parameters (proximal_mu > 0 is FedProx)."""

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    proximal_mu: float = Field(0.0, ge=0)


class StrategySection(Section):
    """[strategy]: server algorithm, client sampling and aggregation rule."""

    name: str = "fedavg"
    fraction: float = Field(1.0, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    server_lr: float = Field(1.0, gt=0)
    aggregator: str = "weighted_mean"
    aggregator_args: dict[str, Any] = Field(default_factory=dict)
    # Server optimiser (Reddi et al. 2021 defaults): server_momentum is FedAvgM's; beta1, beta2
    # and tau are FedAdagrad's, FedAdam's and FedYogi's; other strategies ignore them.
    server_momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    # No client's weight may exceed this share of the round's total (an inflated example count
    # is capped, not trusted); unset: weights are the reported example counts.
    max_weight_share: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _default_server_lr(cls, data: Any) -> Any:
        """Without ``server_lr`` the strategy's own default applies (FedAdam: 10^-2)."""
        if isinstance(data, dict) and "server_lr" not in data:
            from murmura.strategy.fedopt import default_server_lr

            return {**data, "server_lr": default_server_lr(str(data.get("name", "fedavg")))}
        return data


class EvaluationSection(Section):
    """[evaluation]: central evaluation every ``every`` rounds (0: only after the last)."""

    every: int = Field(1, ge=0)


class SimulationSection(Section):
    """[simulation]: how client training is executed (see ``murmura.sim.choose``).

    "auto" trains cohorts vectorised when that equals sequential training, else sequentially;
    "process" splits each cohort over ``workers`` local processes (0: one per core); "ray"
    over Ray actors at ``ray_address`` (None: a local Ray), each reserving
    ``num_cpus_per_client`` CPUs for the client it is training.
    """

    executor: Literal["auto", "sequential", "vectorized", "process", "ray"] = "auto"
    workers: int = Field(0, ge=0)
    ray_address: str | None = None
    num_cpus_per_client: float = Field(1.0, gt=0)
    threads: int = Field(1, ge=0)
    """torch intra-op threads per process (0: torch's default). Client models are small, so
    parallelism comes from executors; idle OpenMP threads spinning on a loaded machine cost
    more than they give."""


class TopologySection(Section):
    """[topology]: "star" is server-client; "tree" hierarchical; any other graph is P2P.

    For P2P, ``args`` go to the graph builder (``n``, the number of peers, defaults to
    ``partition.num_clients``; with fewer peers each holds a contiguous block of clients).
    ``algorithm`` "dpsgd" trains ``local_steps`` minibatches between exchanges, "gossip"
    ``client.epochs`` epochs; ``robust`` is "none", "clipped" (``tau``; adaptive when unset)
    or an aggregator name with ``robust_args``. ``edges`` is the tree's edge count.
    ``byzantine_peers`` names the attacking peers (else a seeded ``byzantine_fraction``).
    """

    kind: str = "star"
    args: dict[str, Any] = Field(default_factory=dict)
    algorithm: Literal["dpsgd", "gossip"] = "dpsgd"
    local_steps: int = Field(1, ge=1)
    robust: str = "none"
    robust_args: dict[str, Any] = Field(default_factory=dict)
    tau: float | None = Field(None, gt=0)
    clip_weight: float = Field(0.25, ge=0, lt=1)
    time_varying: bool = False
    dropout: float = Field(0.0, ge=0, lt=1)
    byzantine_fraction: float = Field(0.0, ge=0, lt=1)
    byzantine_peers: list[int] | None = None
    attack: str = "sign_flip"
    attack_args: dict[str, Any] = Field(default_factory=dict)
    edges: int = Field(2, ge=1)


class AttackSection(Section):
    """[attack]: simulated Byzantine clients (simulation only); ``kind = "none"`` disables.

    ``fraction`` of the clients, chosen by ``[run] seed``, wrap attack ``kind`` with ``args``.
    """

    kind: str = "none"
    fraction: float = Field(0.2, ge=0, le=1)
    args: dict[str, Any] = Field(default_factory=dict)


class AnomalySection(Section):
    """[anomaly]: per-client scores each round in metrics.jsonl, and flagging.

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

    ``mode`` "central" is DP-FedAvg with Poisson sampling at ``strategy.fraction``, "local"
    clips and noises on every client; ``dp_sgd`` adds sample-level DP-SGD on the clients.
    Without ``noise_multiplier`` the noise is planned for ``target_epsilon`` over
    ``run.rounds``; a run stops before ``target_epsilon`` would be exceeded.
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
    accountant: Literal["rdp", "pld"] = "rdp"
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


class Config(Section):
    """A whole run."""

    run: RunSection = RunSection()
    task: TaskSection = TaskSection()
    partition: PartitionSection = PartitionSection()
    client: ClientSection = ClientSection()
    strategy: StrategySection = StrategySection()
    evaluation: EvaluationSection = EvaluationSection()
    simulation: SimulationSection = SimulationSection()
    topology: TopologySection = TopologySection()
    attack: AttackSection = AttackSection()
    anomaly: AnomalySection = AnomalySection()
    privacy: PrivacySection = PrivacySection()
    secagg: SecAggSection = SecAggSection()

    @model_validator(mode="after")
    def _cohort_fits(self) -> Config:
        if self.strategy.min_clients > self.partition.num_clients:
            raise ValueError(
                f"strategy.min_clients = {self.strategy.min_clients} but partition.num_clients "
                f"= {self.partition.num_clients}: cannot sample more clients than exist"
            )
        return self

    def cohort_size(self) -> int:
        """Clients sampled per round."""
        n = self.partition.num_clients
        return min(n, max(self.strategy.min_clients, math.ceil(self.strategy.fraction * n)))


def _allowed(model: type[BaseModel], loc: tuple[str | int, ...]) -> str:
    """The keys allowed at the table that holds ``loc``."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        model = ann
    return ", ".join(model.model_fields)


def _explain(source: str, err: ValidationError) -> ConfigError:
    """One ConfigError listing every problem with its key."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys here: {_allowed(Config, e['loc'])}"
        elif e["type"] != "value_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"{source}: key '{key}': {msg}")
    return ConfigError("\n".join(lines))


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=1"`` -> (["a", "b"], 1); the value is read as TOML, else taken as a string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. run.rounds=5")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``data`` with each ``KEY=VALUE`` override set."""
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a table")
            node[part] = nxt = dict(nxt)
            node = nxt
        node[path[-1]] = value
    return out


def config_from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a config mapping, checking plug-in names and rule preconditions too."""
    try:
        cfg = Config.model_validate(data)
    except ValidationError as err:
        raise _explain(source, err) from None
    _check_plugins(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a TOML config file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(apply_overrides(data, overrides or []), str(path))


def _check_plugins(cfg: Config, source: str) -> None:
    """Names exist in their registries and the aggregator accepts the cohort size."""
    from murmura.aggregate import AGGREGATORS
    from murmura.strategy import STRATEGIES

    s = cfg.strategy
    checks: list[tuple[str, Callable[[], object]]] = [
        ("strategy.name", lambda: STRATEGIES.get(s.name)),
        ("strategy.aggregator", lambda: AGGREGATORS.get(s.aggregator)),
        (
            "strategy.aggregator_args",
            lambda: AGGREGATORS.get(s.aggregator)(**s.aggregator_args).check(cfg.cohort_size()),
        ),
        ("attack", lambda: _check_attack(cfg.attack)),
        ("privacy", lambda: _check_privacy(cfg)),
        ("secagg", lambda: _check_secagg(cfg)),
    ]
    for key, check in checks:
        try:
            check()
        except (MurmuraError, TypeError) as exc:
            raise ConfigError(f"{source}: key '{key}': {exc}") from None


def _check_attack(attack: AttackSection) -> None:
    """The attack is registered and takes its arguments."""
    if attack.kind != "none":
        from murmura.attacks import check_attack

        check_attack(attack.kind, attack.args)


def _check_privacy(cfg: Config) -> None:
    """The [privacy] settings fit together and with the strategy (messages name the key)."""
    if cfg.privacy != PrivacySection():
        from murmura.privacy.wiring import check_privacy

        check_privacy(cfg)


def _check_secagg(cfg: Config) -> None:
    """[secagg] fits the strategy, aggregator, anomaly and privacy settings."""
    if cfg.secagg.enabled:
        from murmura.privacy.secure_wiring import check_secagg

        check_secagg(cfg)
