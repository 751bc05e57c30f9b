"""The coordinator's answer size limit covers every SecAgg+ answer a round can produce."""

from __future__ import annotations

import numpy as np

from murmura.node.secagg_coordinator import ANSWER_MARGIN, PER_NEIGHBOUR, answer_limit
from murmura.privacy.secagg import SecAggConfig, run_secagg_round
from murmura.privacy.secagg.messages import ClientMessage, MaskedInput, encode


def test_the_limit_is_the_masked_input_plus_room_for_every_other_answer() -> None:
    n, k, d = 16, 15, 8  # the complete graph: the largest key-sharing answers per node
    sizes: dict[type, int] = {}

    def measure(msg: ClientMessage) -> ClientMessage:
        sizes[type(msg)] = max(sizes.get(type(msg), 0), len(encode(msg)))
        return msg

    updates = np.random.default_rng(0).normal(0, 0.1, (n, d)).astype(np.float32)
    run_secagg_round(updates, np.ones(n), neighbours=k, max_weight=1.0, intercept=measure)
    config = SecAggConfig(num_clients=n, dim=d, neighbours=k, threshold=k // 3 + 1, clip=1.0,
                          max_weight=1.0, round_=0, graph_seed=0)  # fmt: skip
    limit = answer_limit(config)
    assert sizes[MaskedInput] == limit - ANSWER_MARGIN - PER_NEIGHBOUR * k
    others = [size for kind, size in sizes.items() if kind is not MaskedInput]
    assert len(others) == 4 and max(others) <= PER_NEIGHBOUR * k
    big = SecAggConfig(num_clients=n, dim=1_500_000, neighbours=k, threshold=k // 3 + 1,
                       clip=1.0, max_weight=1.0, round_=0, graph_seed=0)  # fmt: skip
    assert 6_000_000 < answer_limit(big) < 6_000_000 + (100 << 10)  # a small margin
