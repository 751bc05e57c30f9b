import pytest
import torch
from torch import nn
from torch.nn import functional as F

from murmura.errors import ConfigError
from murmura.privacy.dp_sgd import (
    clip_per_sample,
    dp_sgd_step,
    per_sample_gradients,
    per_sample_norms,
    private_gradient,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))


def _batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 10, generator=g) * torch.linspace(0.1, 5.0, n).unsqueeze(1)
    return x, torch.randint(0, 3, (n,), generator=g)


def _loop_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    rows: dict[str, list[torch.Tensor]] = {n: [] for n, _ in model.named_parameters()}
    for i in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            assert p.grad is not None
            rows[n].append(p.grad.detach().clone())
    return {n: torch.stack(r) for n, r in rows.items()}


def test_per_sample_gradients_equal_a_plain_loop() -> None:
    model, (x, y) = _model(), _batch()
    grads, losses = per_sample_gradients(model, F.cross_entropy, x, y)
    expected = _loop_gradients(model, x, y)
    assert grads.keys() == expected.keys()
    for name, g in grads.items():
        assert g.shape == (12, *dict(model.named_parameters())[name].shape)
        torch.testing.assert_close(g, expected[name], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        ref = F.cross_entropy(model(x), y, reduction="none")
    torch.testing.assert_close(losses, ref, rtol=1e-5, atol=1e-6)


def test_clipping_bounds_every_sample_and_keeps_small_ones() -> None:
    model, (x, y) = _model(), _batch()
    grads, _ = per_sample_gradients(model, F.cross_entropy, x, y)
    norms = per_sample_norms(grads)
    clip = float(norms.median())
    clipped, before = clip_per_sample(grads, clip)
    torch.testing.assert_close(before, norms)
    after = per_sample_norms(clipped)
    assert (after <= clip).all()
    small = norms <= clip
    assert small.any() and (~small).any()
    for name in grads:
        assert torch.equal(clipped[name][small], grads[name][small])
    torch.testing.assert_close(
        after[~small], torch.full_like(after[~small], clip), rtol=1e-5, atol=0
    )


def test_private_gradient_without_noise_is_the_mean_of_clipped_loop_gradients() -> None:
    model, (x, y) = _model(), _batch()
    loop = _loop_gradients(model, x, y)
    clipped, _ = clip_per_sample(loop, 0.5)
    grads, stats = private_gradient(
        model, F.cross_entropy, x, y, clip_norm=0.5, noise_multiplier=0.0, expected_batch_size=20
    )
    for name, g in grads.items():
        torch.testing.assert_close(g, clipped[name].sum(0) / 20, rtol=1e-5, atol=1e-6)
    assert stats.batch_size == 12 and 0.0 < stats.clipped_fraction <= 1.0


def test_noise_has_std_z_times_c_over_the_batch() -> None:
    torch.manual_seed(0)
    model = nn.Linear(1000, 60)  # 60k parameters for a tight estimate of the std
    x, y = torch.randn(8, 1000), torch.randint(0, 60, (8,))
    kwargs = {"clip_norm": 2.0, "expected_batch_size": 8}
    clean, _ = private_gradient(model, F.cross_entropy, x, y, noise_multiplier=0.0, **kwargs)
    gen = torch.Generator().manual_seed(5)
    noisy, _ = private_gradient(
        model, F.cross_entropy, x, y, noise_multiplier=1.5, generator=gen, **kwargs
    )
    noise = torch.cat([(noisy[n] - clean[n]).flatten() for n in clean]) * 8
    assert float(noise.std()) == pytest.approx(3.0, rel=0.02)
    assert abs(float(noise.mean())) < 5 * 3.0 / noise.numel() ** 0.5


def test_dp_sgd_step_applies_the_private_gradient() -> None:
    model, (x, y) = _model(), _batch()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected, _ = private_gradient(
        model,
        F.cross_entropy,
        x,
        y,
        clip_norm=1.0,
        noise_multiplier=0.7,
        generator=torch.Generator().manual_seed(9),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = dp_sgd_step(
        model,
        optimizer,
        F.cross_entropy,
        x,
        y,
        clip_norm=1.0,
        noise_multiplier=0.7,
        generator=torch.Generator().manual_seed(9),
    )
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), before[name] - 0.1 * expected[name])
        assert p.grad is None
    assert stats.loss > 0


def test_empty_batch_gives_pure_noise_and_batch_norm_is_refused() -> None:
    model = _model()
    x, y = torch.empty(0, 10), torch.empty(0, dtype=torch.long)
    grads, stats = private_gradient(
        model,
        F.cross_entropy,
        x,
        y,
        clip_norm=1.0,
        noise_multiplier=1.0,
        expected_batch_size=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert stats.batch_size == 0 and all(bool(g.abs().sum() > 0) for g in grads.values())
    bn = nn.Sequential(nn.Linear(10, 4), nn.BatchNorm1d(4))
    with pytest.raises(ConfigError, match="GroupNorm"):
        per_sample_gradients(bn, F.cross_entropy, *_batch())
