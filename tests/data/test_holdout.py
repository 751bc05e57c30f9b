"""Local held-out data: disjoint from training, seeded per client, the same wherever it is built."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from murmura.client import FlatModel, LocalSGD, TorchClient
from murmura.config import config_from_dict
from murmura.data import ArrayFederatedDataset, LocalHoldout
from murmura.data.holdout import holdout_count, holdout_split
from murmura.errors import ConfigError
from murmura.node.deploy import client_from_config
from murmura.sim.builder import build_experiment
from murmura.sim.process_pool import ShareTrainer
from murmura.tasks.digits import DigitsTask
from murmura.types import FitIns


@given(st.integers(0, 400), st.floats(0.01, 0.99), st.integers(0, 2**31), st.integers(0, 999))
def test_split_is_disjoint_covering_and_sized(n: int, fraction: float, seed: int, cid: int) -> None:
    train, held = holdout_split(n, fraction, seed, cid)
    assert len(held) == holdout_count(n, fraction) == int(np.floor(fraction * n + 1e-9))
    assert not set(train) & set(held)
    assert sorted([*train, *held]) == list(range(n))
    again = holdout_split(n, fraction, seed, cid)
    assert np.array_equal(train, again[0]) and np.array_equal(held, again[1])


def _tagged(num_clients: int) -> ArrayFederatedDataset:
    """Samples whose single feature is their index, so every returned row names itself."""
    x = np.arange(200, dtype=np.float32).reshape(-1, 1)
    y = np.arange(200, dtype=np.int64) % 10
    parts = [np.arange(c, 200, num_clients, dtype=np.int64) for c in range(num_clients)]
    parts[-1] = parts[-1][:5]  # a client too small to hold anything out at 0.1
    return ArrayFederatedDataset(x, y, parts, x[:3], y[:3])


def test_clients_train_and_evaluate_on_disjoint_samples_of_their_own_partition() -> None:
    inner = _tagged(8)
    data = LocalHoldout(inner, 0.1, seed=4)
    for cid in range(8):
        own = {int(v) for v in inner.client_train(cid)[0].flatten()}
        train = [int(v) for v in data.client_train(cid)[0].flatten()]
        held = [int(v) for v in data.client_eval(cid)[0].flatten()]
        assert not set(train) & set(held) and set(train) | set(held) == own
        assert len(held) == len(own) // 10 and data.client_size(cid) == len(train)
    assert data.client_eval(7)[0].shape[0] == 0  # 5 samples: nothing held out
    other = LocalHoldout(inner, 0.1, seed=5)
    assert not torch.equal(other.client_eval(0)[0], data.client_eval(0)[0])  # seeded
    with pytest.raises(ConfigError, match="fraction"):
        LocalHoldout(inner, 1.0, seed=0)


def test_torch_client_evaluates_held_out_data_not_its_training_data() -> None:
    task = DigitsTask()
    inner = task.federate(5, "iid", {}, seed=0)
    model = FlatModel(task.build_model())
    held = TorchClient(2, LocalHoldout(inner, 0.2, seed=0), task, model, LocalSGD())
    res = held.evaluate(model.get())
    assert res.num_examples == len(held.data.client_eval(2)[0]) == inner.client_size(2) // 5
    assert held.fit(FitIns(1, model.get())).num_examples == inner.client_size(2) - res.num_examples
    plain = TorchClient(2, inner, task, model, LocalSGD())
    assert plain.evaluate(model.get()).num_examples == 0  # nothing held out: nothing evaluated


CONFIG = {
    "partition": {"kind": "dirichlet", "num_clients": 6},
    "evaluation": {"federated": True, "local_fraction": 0.15},
    "run": {"seed": 7},
}


def test_simulation_process_pool_and_deployed_worker_split_alike() -> None:
    cfg = config_from_dict(CONFIG)
    exp = build_experiment(cfg)
    assert isinstance(exp.data, LocalHoldout)
    pool = ShareTrainer(cfg.model_dump(mode="json"), "sequential").data
    for cid in (0, 3, 5):
        want_x, _ = exp.data.client_eval(cid)
        worker = client_from_config(cfg, f"{cid}/6")
        assert isinstance(worker, TorchClient) and isinstance(worker.data, LocalHoldout)
        assert torch.equal(worker.data.client_eval(cid)[0], want_x)
        assert torch.equal(pool.client_train(cid)[0], exp.data.client_train(cid)[0])
    off = build_experiment(config_from_dict({**CONFIG, "evaluation": {"federated": False}}))
    assert not isinstance(off.data, LocalHoldout)  # central-only runs train on everything
