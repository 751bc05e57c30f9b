import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from murmura.errors import ConfigError, RegistryError
from murmura.tasks import load_task
from murmura.tasks.digits import load_digits_split
from murmura.tasks.synthetic import synthetic_client


def test_digits_split_is_stratified_and_standardised() -> None:
    x_tr, y_tr, x_te, y_te = load_digits_split()
    assert x_tr.shape == (1437, 64) and x_te.shape == (360, 64)
    assert x_tr.dtype == np.float32
    np.testing.assert_allclose(x_tr.mean(axis=0), 0, atol=1e-5)
    assert np.bincount(y_te).min() >= 35  # stratified: every class in the test split
    model = load_task("digits").build_model()
    assert sum(p.numel() for p in model.parameters()) == 64 * 64 + 64 + 64 * 10 + 10


def test_synthetic_matches_the_fedprox_generator_shape() -> None:
    x, y = synthetic_client(1.0, 1.0, seed=0, cid=5)
    assert x.shape[1] == 60 and len(x) >= 50 and y.max() < 10
    x2, _ = synthetic_client(1.0, 1.0, seed=0, cid=5)
    np.testing.assert_array_equal(x, x2)
    # covariance diag(j^-1.2): later features vary less
    big = np.concatenate(
        [
            synthetic_client(1.0, 1.0, 0, c)[0] - synthetic_client(1.0, 1.0, 0, c)[0].mean(0)
            for c in range(30)
        ]
    )
    var = big.var(axis=0)
    assert var[0] > 5 * var[-1]


def test_synthetic_clients_are_lazy_and_test_set_is_their_held_out_union() -> None:
    task = load_task("synthetic", eval_clients=3)
    data = task.federate(100_000, "natural", {}, seed=0)
    assert data.num_clients == 100_000
    x, y = data.test()
    sizes = [len(synthetic_client(1.0, 1.0, 0, c)[0]) for c in range(3)]
    assert len(x) == sum(round(0.2 * s) for s in sizes)
    assert data.client_size(7) + round(0.2 * len(synthetic_client(1.0, 1.0, 0, 7)[0])) == len(
        synthetic_client(1.0, 1.0, 0, 7)[0]
    )
    with pytest.raises(ConfigError, match="partition.kind must be 'natural'"):
        task.federate(10, "dirichlet", {}, seed=0)


def test_user_task_from_module_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mytask.py").write_text(
        textwrap.dedent("""
        from murmura.tasks.digits import DigitsTask
        def make(hidden=8):
            return DigitsTask(hidden=hidden)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    task = load_task("mytask:make", hidden=8)
    assert isinstance(task.build_model()(torch.zeros(1, 64)), torch.Tensor)
    with pytest.raises(ConfigError, match="cannot be loaded"):
        load_task("mytask:nope")
    with pytest.raises(RegistryError, match="valid: digits, image, synthetic, tabular"):
        load_task("mnist")
    sys.modules.pop("mytask", None)
