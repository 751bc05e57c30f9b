"""Config tables of the run and its training.

[run], [task], [partition], [client], [strategy], [evaluation] and [simulation].
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from murmura.config.base import Section


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
    """[partition]: how the task's data is split across clients (None: the task's default).

    ``files`` (the ``tabular`` and ``image`` tasks): one client per file or sub-folder of
    ``path``, read as a deployed site reads its own; ``num_clients`` must be their number.
    """

    kind: Literal["iid", "dirichlet", "shards", "quantity", "natural", "files"] | None = None
    num_clients: int = Field(10, ge=1)
    alpha: float = Field(0.5, gt=0)
    min_size: int = Field(1, ge=1)
    classes_per_client: int = Field(2, ge=1)
    sigma: float = Field(1.0, gt=0)
    path: str | None = None
    """The folder of ``kind = "files"``: one client per data file or sub-folder."""

    @model_validator(mode="after")
    def _files_have_a_path(self) -> PartitionSection:
        if (self.kind == "files") != (self.path is not None):
            raise ValueError("partition.path goes with partition.kind = 'files', and only with it")
        return self

    def args(self, kind: str) -> dict[str, Any]:
        """The keyword arguments the partitioner ``kind`` takes."""
        by_kind: dict[str, dict[str, Any]] = {
            "dirichlet": {"alpha": self.alpha, "min_size": self.min_size},
            "shards": {"classes_per_client": self.classes_per_client},
            "quantity": {"sigma": self.sigma},
            "files": {"path": self.path},
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
    """[strategy]: server algorithm, client sampling and aggregation rule.

    ``pre_aggregation`` ("nnm", "bucketing" or "arc", with ``pre_aggregation_args``) transforms
    the rows before ``aggregator`` wherever it runs: the star's server, each tree edge over its
    children, each P2P peer over its neighbourhood (``topology.robust`` a rule or "none").
    ``normalize_steps`` (FedNova) rescales every update to ``tau_eff`` local steps before the
    rule, at a star's server and at each tree edge (refused for peers, SecAgg+ and DP).
    """

    name: str = "fedavg"
    fraction: float = Field(1.0, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    server_lr: float = Field(1.0, gt=0)
    aggregator: str = "weighted_mean"
    aggregator_args: dict[str, Any] = Field(default_factory=dict)
    pre_aggregation: str = "none"
    pre_aggregation_args: dict[str, Any] = Field(default_factory=dict)
    # Server optimiser (Reddi et al. 2021 defaults): server_momentum is FedAvgM's; beta1, beta2
    # and tau are FedAdagrad's, FedAdam's and FedYogi's; other strategies ignore them.
    server_momentum: float = Field(0.9, ge=0, lt=1)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-3, gt=0)
    # No client's weight may exceed this share of the round's total (an inflated example count
    # is capped, not trusted); unset: weights are the reported example counts.
    max_weight_share: float | None = Field(None, gt=0, le=1)
    # FedNova (Wang et al. 2020): each update rescaled to tau_eff local steps before the rule
    # (tau_eff: FedNova's weighted mean of the reported counts, with a robust rule each count
    # clamped to within 2x of their median); at the star's server and at every tree edge.
    normalize_steps: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_server_lr(cls, data: Any) -> Any:
        """Without ``server_lr`` the strategy's own default applies (FedAdam: 10^-2)."""
        if isinstance(data, dict) and "server_lr" not in data:
            from murmura.strategy.fedopt import default_server_lr

            return {**data, "server_lr": default_server_lr(str(data.get("name", "fedavg")))}
        return data


class EvaluationSection(Section):
    """[evaluation]: how often and on what data the global model is evaluated.

    Every ``every`` rounds (0: only after the last), on the task's test set at the server
    (``central``) and, with ``federated``, on clients' own data: a seeded ``fraction`` of them
    (at least ``min_clients``) evaluate it on the ``local_fraction`` of their partition that
    they set aside before training; the round reports the examples-weighted means.
    """

    every: int = Field(1, ge=0)
    central: bool = True
    federated: bool = False
    fraction: float = Field(1.0, gt=0, le=1)
    min_clients: int = Field(1, ge=1)
    local_fraction: float = Field(0.1, gt=0, lt=1)

    def held_out(self) -> float | None:
        """The share of each client's data held out for evaluation (None: none is)."""
        return self.local_fraction if self.federated else None


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
    checkpoint_every: int = Field(1, ge=0)
    """``murmura run``: checkpoint the run every k rounds, for ``--resume`` (0: never; a
    resume then starts over)."""
    keep_last: int = Field(2, ge=1)
    """``murmura run``: checkpoints kept in the run's ``checkpoints/`` (the newest ones)."""
