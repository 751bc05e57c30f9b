import numpy as np
import pytest
import torch
from torch import nn

from murmura.client import FlatModel, LocalSGD, TorchClient
from murmura.seeding import client_generator
from murmura.tasks import load_task
from murmura.types import FitIns


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    task = load_task("digits")
    return task, task.federate(10, "iid", {}, seed=0)


def reference_sgd(
    task, x, y, start: torch.Tensor, hp: LocalSGD, gen: torch.Generator
) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Plain torch.optim.SGD with FedProx's term added to the gradient by hand."""
    model = task.build_model()
    nn.utils.vector_to_parameters(start.clone(), model.parameters())
    anchor = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
    )
    for _ in range(hp.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), hp.batch_size):
            idx = perm[i : i + hp.batch_size]
            opt.zero_grad()
            task.loss(model(x[idx]), y[idx]).backward()
            with torch.no_grad():
                for p, a in zip(model.parameters(), anchor, strict=True):
                    p.grad.add_(p - a, alpha=hp.proximal_mu)
            opt.step()
    return nn.utils.parameters_to_vector(model.parameters()).detach()


@pytest.mark.parametrize(
    "hp",
    [
        LocalSGD(epochs=2, batch_size=16, lr=0.05),
        LocalSGD(epochs=2, batch_size=7, lr=0.05, momentum=0.9, weight_decay=1e-3),
        LocalSGD(epochs=3, batch_size=16, lr=0.05, proximal_mu=0.5),
    ],
)
def test_torch_client_matches_plain_torch_sgd(digits, hp: LocalSGD) -> None:  # type: ignore[no-untyped-def]
    task, data = digits
    torch.manual_seed(0)
    flat = FlatModel(task.build_model())
    start = flat.get()
    client = TorchClient(3, data, task, flat, hp, seed=7)
    res = client.fit(FitIns(round=2, weights=start))
    x, y = data.client_train(3)
    expected = reference_sgd(task, x, y, torch.from_numpy(start), hp, client_generator(7, 2, 3))
    np.testing.assert_allclose(start + res.update, expected.numpy(), rtol=1e-5, atol=1e-6)
    assert res.num_examples == len(x)
    assert res.metrics["train_loss"] > 0


def test_fit_returns_a_delta_and_leaves_global_weights_untouched(digits) -> None:  # type: ignore[no-untyped-def]
    task, data = digits
    flat = FlatModel(task.build_model())
    start = flat.get()
    before = start.copy()
    res = TorchClient(0, data, task, flat, LocalSGD(lr=0.1)).fit(FitIns(1, start))
    np.testing.assert_array_equal(start, before)
    assert res.update.dtype == np.float32 and np.linalg.norm(res.update) > 0


def test_server_config_overrides_hyper_parameters(digits) -> None:  # type: ignore[no-untyped-def]
    task, data = digits
    flat = FlatModel(task.build_model())
    w = flat.get()
    client = TorchClient(0, data, task, flat, LocalSGD(lr=0.1))
    small = client.fit(FitIns(1, w, {"lr": 0.001})).update
    big = client.fit(FitIns(1, w)).update
    assert np.linalg.norm(small) < 0.1 * np.linalg.norm(big)


def test_flat_model_gradients_accumulate_in_the_flat_buffer() -> None:
    flat = FlatModel(nn.Linear(3, 2))
    flat.module(torch.ones(4, 3)).sum().backward()
    assert flat.grad.abs().sum() > 0
    assert flat.module.weight.grad.data_ptr() == flat.grad.data_ptr()
