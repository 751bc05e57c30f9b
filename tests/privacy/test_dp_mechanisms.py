import numpy as np
import pytest

from murmura.privacy.clipping import clip_rows
from murmura.privacy.mechanisms import CentralDP, central_dp_mean, local_dp_update


def test_central_noise_has_std_z_times_c_over_the_expected_cohort() -> None:
    n, d, clip, z, cohort = 6, 200_000, 2.0, 1.5, 8.0
    updates = np.zeros((n, d), dtype=np.float32)
    out = central_dp_mean(
        updates,
        clip_norm=clip,
        noise_multiplier=z,
        expected_cohort_size=cohort,
        rng=np.random.default_rng(7),
    )
    noise = out.astype(np.float64) * cohort
    # sample std of 200k draws is within ~0.2% of the truth; 1.5% leaves a wide margin
    assert noise.std() == pytest.approx(z * clip, rel=0.015)
    assert abs(noise.mean()) < 5 * z * clip / np.sqrt(d)


def test_without_noise_it_is_the_clipped_sum_over_the_expected_cohort() -> None:
    rng = np.random.default_rng(0)
    updates = (rng.normal(size=(10, 50)) * rng.uniform(0.1, 5, size=(10, 1))).astype(np.float32)
    dp = CentralDP(clip_norm=1.0, noise_multiplier=0.0, expected_cohort_size=12.5)
    out = dp.aggregate(updates, np.random.default_rng(1))
    clipped, _ = clip_rows(updates, 1.0)
    assert np.allclose(out, clipped.sum(axis=0) / 12.5, atol=1e-6)
    assert np.allclose(dp.finalize(clipped.sum(axis=0), np.random.default_rng(1)), out, atol=1e-6)


def test_same_seed_same_noise_and_streaming_equals_batch() -> None:
    rng = np.random.default_rng(3)
    updates = rng.normal(size=(5, 1000)).astype(np.float32) * 3
    dp = CentralDP(clip_norm=2.0, noise_multiplier=1.1, expected_cohort_size=5)
    a = dp.aggregate(updates, np.random.default_rng(42))
    b = dp.aggregate(updates, np.random.default_rng(42))
    assert np.array_equal(a, b)
    running = np.zeros(1000, dtype=np.float32)
    for row in updates:  # the streaming path: clip each as it arrives, sum, finalize once
        running += clip_rows(row[None, :], 2.0)[0][0]
    assert np.allclose(dp.finalize(running, np.random.default_rng(42)), a, atol=1e-5)
    assert dp.noise_std == pytest.approx(2.2)


def test_local_dp_clips_then_adds_noise_of_std_z_c() -> None:
    update = np.full(100_000, 1.0, dtype=np.float32)  # norm 316 >> C
    out = local_dp_update(update, clip_norm=3.0, noise_multiplier=0.5, rng=np.random.default_rng(5))
    clipped_value = 3.0 / np.sqrt(100_000)
    noise = out.astype(np.float64) - clipped_value
    assert noise.std() == pytest.approx(1.5, rel=0.015)
    assert abs(noise.mean()) < 5 * 1.5 / np.sqrt(100_000)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="noise_multiplier"):
        CentralDP(clip_norm=1.0, noise_multiplier=-1.0, expected_cohort_size=3)
    with pytest.raises(ValueError, match="expected_cohort_size"):
        CentralDP(clip_norm=1.0, noise_multiplier=1.0, expected_cohort_size=0)
