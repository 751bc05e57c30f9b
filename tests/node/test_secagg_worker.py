"""What a worker masks in a secure round: its update and weight, clipped under central DP."""

from __future__ import annotations

import numpy as np

from murmura.node.secagg_worker import setup_config, weighted
from murmura.transport.proto import secagg_pb2 as spb


def _setup(**kw: float) -> spb.SecAggSetup:
    return spb.SecAggSetup(
        num_clients=5, dim=3, neighbours=4, threshold=3, clip=1.0, max_weight=20.0,
        graph_seed=7, rounding="deterministic", cohort=["a", "b", "c", "d", "e"], index=2, **kw,
    )  # fmt: skip


def test_plain_fedavg_masks_the_update_weighted_by_its_examples() -> None:
    x = np.array([3.0, 4.0, 0.0], dtype=np.float32)
    out, w = weighted(_setup(), x, 12)
    assert out is x and w == 12.0


def test_central_dp_clips_to_the_l2_norm_and_caps_the_weight() -> None:
    x = np.array([3.0, 4.0, 0.0], dtype=np.float32)
    out, w = weighted(_setup(dp_clip_norm=1.0), x, 12)
    np.testing.assert_allclose(out, [0.6, 0.8, 0.0], rtol=1e-5)
    assert np.linalg.norm(out) <= 1.0
    assert w == 1.0
    assert weighted(_setup(dp_clip_norm=1.0, dp_weight_cap=24.0), x, 12)[1] == 0.5
    assert weighted(_setup(dp_clip_norm=1.0, dp_weight_cap=6.0), x, 12)[1] == 1.0


def test_the_config_binds_the_run_and_round() -> None:
    c = setup_config(_setup(), "run-x", 4)
    assert (c.num_clients, c.dim, c.neighbours, c.threshold) == (5, 3, 4, 3)
    assert c.rounding == "deterministic" and c.round_ == 4 and c.context == b"run-x"
    assert c.binding() != setup_config(_setup(), "run-y", 4).binding()


def test_level_bits_in_the_setup_select_the_16_bit_ring() -> None:
    plain = setup_config(_setup(), "run-x", 4)
    assert plain.level_bits is None and plain.word_bytes == 4
    levels = setup_config(_setup(level_bits=8), "run-x", 4)
    assert levels.level_bits == 8 and levels.word_bytes == 2
    assert levels.binding() != plain.binding()  # keys of one ring never serve the other
