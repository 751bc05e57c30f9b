"""The Learner layer: what every node that trains on its own data is, whatever the topology.

A ``Learner`` trains from the weights it is given and returns the delta (``fit``), and
evaluates weights on its own data (``evaluate``). A star client, a tree leaf and a peer are
all Learners; the privacy wrappers (``murmura.privacy.local.LocalDPClient`` and
``murmura.privacy.dp_client.DPSGDClient``) are Learners around a Learner, built once by
``murmura.privacy.wiring.private_learners`` for the simulation and the deployment alike.

A ``LocalLearner`` also exposes its local training (model, data, hyper-parameters, random
stream and step count), which is what DP-SGD replaces: it keeps the data and the schedule
and swaps plain SGD for per-sample clipped, noised gradients.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from murmura.client import FlatModel, LocalSGD
    from murmura.tasks.base import Task
    from murmura.types import EvaluateRes, FitIns, FitRes, Vector


class Learner(Protocol):
    """A node that trains and evaluates locally; its raw data never leaves it."""

    node_id: str

    def fit(self, ins: FitIns) -> FitRes:
        """Train from ``ins.weights`` and return the delta (new - start)."""
        ...

    def evaluate(self, weights: Vector) -> EvaluateRes:
        """Evaluate ``weights`` on local data."""
        ...


class LocalLearner(Learner, Protocol):
    """A Learner that runs minibatch SGD on a ``FlatModel`` over data it holds."""

    model: FlatModel
    task: Task
    hp: LocalSGD

    @property
    def num_examples(self) -> int:
        """Training examples the learner holds."""
        ...

    @property
    def local_steps(self) -> int | None:
        """Minibatch steps per round, or None for ``hp.epochs`` passes over the data."""
        ...

    def local_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The learner's training inputs and labels."""
        ...

    def generator(self, round_: int) -> torch.Generator:
        """The learner's random stream for ``round_`` (batches, and DP-SGD's sampling)."""
        ...
