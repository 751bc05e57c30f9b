"""``Config``: a whole run, one field per table, with the checks that span tables."""

from __future__ import annotations

import math

from pydantic import model_validator

from murmura.config.base import Section
from murmura.config.clock import ClockSection
from murmura.config.compression import CompressionSection
from murmura.config.security import AnomalySection, AttackSection, PrivacySection, SecAggSection
from murmura.config.stats import StatsSection
from murmura.config.topology import TopologySection
from murmura.config.tracking import TrackingSection
from murmura.config.training import (
    ClientSection,
    EvaluationSection,
    PartitionSection,
    RunSection,
    SimulationSection,
    StrategySection,
    TaskSection,
)


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
    stats: StatsSection = StatsSection()
    compression: CompressionSection = CompressionSection()
    tracking: TrackingSection = TrackingSection()
    clock: ClockSection = ClockSection()

    @model_validator(mode="after")
    def _cohort_fits(self) -> Config:
        if self.strategy.min_clients > self.partition.num_clients:
            raise ValueError(
                f"strategy.min_clients = {self.strategy.min_clients} but partition.num_clients "
                f"= {self.partition.num_clients}: cannot sample more clients than exist"
            )
        return self

    @model_validator(mode="after")
    def _federated_evaluation_fits(self) -> Config:
        e = self.evaluation
        if not e.federated:
            return self
        if e.min_clients > self.partition.num_clients:
            raise ValueError(
                f"evaluation.min_clients = {e.min_clients} but partition.num_clients = "
                f"{self.partition.num_clients}: cannot sample more clients than exist"
            )
        if self.topology.kind != "star":
            raise ValueError(
                f"evaluation.federated = true needs a server-client run (topology.kind = "
                f"'star'), got {self.topology.kind!r}"
            )
        if self.privacy.mode == "local":
            raise ValueError(
                "evaluation.federated = true with privacy.mode = 'local': the server is not "
                "trusted under local DP, and clients' evaluation figures are not privatised"
            )
        return self

    @model_validator(mode="after")
    def _compression_composes(self) -> Config:
        from murmura.compress.composition import check_composition

        check_composition(self)
        return self

    @model_validator(mode="after")
    def _clock_composes(self) -> Config:
        from murmura.simtime.composition import check_clock

        check_clock(self)
        return self

    @model_validator(mode="after")
    def _standardise_fits(self) -> Config:
        if not self.stats.standardise:
            return self
        if self.task.name != "tabular":
            raise ValueError(
                f"stats.standardise = true fits the 'tabular' task's mean and scale; task.name "
                f"is {self.task.name!r}: set stats.standardise = false"
            )
        given = [k for k in ("mean", "scale") if k in self.task.args]
        if given:
            raise ValueError(
                f"stats.standardise = true fits task.args.{given[0]} from the federated "
                "statistics: remove task.args.mean and task.args.scale, or set "
                "stats.standardise = false"
            )
        if "schema" not in self.task.args:
            raise ValueError("stats.standardise = true needs the task's [task.args.schema]")
        return self

    def cohort_size(self) -> int:
        """Clients sampled per round."""
        n = self.partition.num_clients
        return min(n, max(self.strategy.min_clients, math.ceil(self.strategy.fraction * n)))
