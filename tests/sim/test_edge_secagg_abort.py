"""An edge whose SecAgg+ round aborts reports nothing, saying how many updates survived.

The simulated edge counts the protocol's survivors (the strategy's report), as a deployed
edge (``murmura edge``) can: both fail the parent's round with the same reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from murmura.client import FlatModel, LocalSGD, TorchClient
from murmura.config import config_from_dict
from murmura.engine.edge_round import EdgeRoundFailed
from murmura.privacy.secure_wiring import apply_secagg
from murmura.sim.hierarchical import EdgeAggregator
from murmura.strategy import FedAvg
from murmura.tasks import DigitsTask
from murmura.types import FitIns


def test_an_aborted_secure_edge_round_counts_no_valid_update() -> None:
    task = DigitsTask()
    data = task.federate(2, "iid", {}, seed=0)
    torch.manual_seed(0)
    model = FlatModel(task.build_model())
    hp = LocalSGD(epochs=1, batch_size=64, lr=0.05)
    children = [TorchClient(c, data, task, model, hp, seed=0) for c in range(2)]
    cfg = config_from_dict({"partition": {"num_clients": 2}, "secagg": {"enabled": True}})
    rule = apply_secagg(cfg, FedAvg(fraction=0.5, min_clients=1), 1000)  # one child a round
    edge = EdgeAggregator("edge-1", children, rule)
    with pytest.raises(EdgeRoundFailed) as err:
        edge.fit(FitIns(1, np.asarray(model.get()), {}))
    # one child trained and was valid, but SecAgg+ needs two: nothing survived into a sum
    want = "edge 'edge-1' round 1: 0 valid child updates, 0 failures; nothing to report"
    assert str(err.value) == want
