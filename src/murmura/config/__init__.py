"""Run configuration: TOML files validated with pydantic; every key has a default.

Errors name the file, the key and what is allowed, and are raised before any training. One
module per group of tables (``training``, ``topology``, ``security``), ``run.Config`` for the
whole run and ``loading`` for files and ``--set`` overrides.
"""

from murmura.config.base import Section
from murmura.config.loading import apply_overrides, config_from_dict, load_config, parse_override
from murmura.config.run import Config
from murmura.config.security import (
    AnomalySection,
    AttackSection,
    PrivacySection,
    SecAggSection,
    SecAggStage,
)
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

__all__ = [
    "AnomalySection",
    "AttackSection",
    "ClientSection",
    "Config",
    "EvaluationSection",
    "PartitionSection",
    "PrivacySection",
    "RunSection",
    "SecAggSection",
    "SecAggStage",
    "Section",
    "SimulationSection",
    "StrategySection",
    "TaskSection",
    "TopologySection",
    "TrackingSection",
    "apply_overrides",
    "config_from_dict",
    "load_config",
    "parse_override",
]
