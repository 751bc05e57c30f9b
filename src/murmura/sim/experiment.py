"""What every simulated topology builds: the ``Experiment``.

Shared by the star builder (``murmura.sim.builder``) and the tree and peer-to-peer builders;
the parts themselves come from the composition root (``murmura.compose``), which the deployed
roles build from too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from murmura.client import FlatModel
from murmura.config import Config
from murmura.data.federated import FederatedDataset
from murmura.tasks import Task

if TYPE_CHECKING:
    from murmura.analytics.result import FederatedStats
    from murmura.sim.p2p import P2PSimulation
    from murmura.sim.runtime import Simulation


@dataclass(slots=True)
class Experiment:
    """Everything a simulated run needs, built from one config."""

    config: Config
    task: Task
    data: FederatedDataset
    model: FlatModel
    simulation: Simulation | P2PSimulation
    byzantine: tuple[str, ...] = ()
    """Node ids of the clients that ``[attack]`` made Byzantine (simulation ground truth)."""
    statistics: FederatedStats | None = None
    """The statistics ``[stats] standardise`` fitted the task's scaling from (raw rows)."""
