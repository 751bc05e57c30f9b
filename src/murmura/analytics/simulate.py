"""Federated statistics in simulation: one statistics round over a ``FederatedDataset``'s clients.

Each client's summary is computed from its own data only (``client_train``), exactly as a
deployed site computes it; under secure aggregation the clients' bounded sums go through the
in-memory SecAgg+ driver (``murmura.privacy.secagg.simulation``), so the aggregate carries the
quantisation of a real secure round.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from murmura.analytics.federation import (
    StatsPlan,
    release,
    secure_input,
    secure_output,
    site_summary,
)
from murmura.analytics.result import FederatedStats
from murmura.analytics.summary import F64, Summary, label_histogram, merge_all
from murmura.data.federated import FederatedDataset


def site_name(cid: int) -> str:
    """The node id of simulated client ``cid`` (as ``TorchClient.node_id``)."""
    return f"client-{cid}"


def classes_of(data: FederatedDataset) -> int:
    """Number of classes: one more than the largest test label; 0 for real-valued targets."""
    y = data.test()[1].numpy()
    if y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        return 0
    return int(y.max()) + 1


def largest_client(data: FederatedDataset) -> int:
    """The most rows any client holds: the default ``max_rows`` of a simulated secure round."""
    return max(data.client_size(c) for c in range(data.num_clients))


def _arrays(data: FederatedDataset, cid: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    x, y = data.client_train(cid)
    return x.numpy(), y.numpy()


def simulate_statistics(data: FederatedDataset, plan: StatsPlan) -> FederatedStats:
    """Run a statistics round over every client of ``data`` under ``plan``."""
    summaries: dict[str, Summary] = {}
    for cid in range(data.num_clients):
        x, y = _arrays(data, cid)
        try:
            summaries[site_name(cid)] = site_summary(x, y, plan)
        except ValueError as exc:
            raise ValueError(f"{site_name(cid)}: {exc}") from None
    ordered = [summaries[site_name(c)] for c in range(data.num_clients)]
    merged = _secure_sum(ordered, plan) if plan.secure else merge_all(ordered)
    site_labels = {name: s.labels for name, s in summaries.items()}
    return release(merged, plan, len(ordered), site_labels)


def _secure_sum(summaries: list[Summary], plan: StatsPlan) -> Summary:
    from murmura.privacy.secagg.simulation import run_secagg_round

    inputs = np.stack([secure_input(s, plan) for s in summaries])
    res = run_secagg_round(
        inputs, np.ones(len(summaries)), clip=1.0, max_weight=1.0, seed=plan.seed
    )
    return secure_output(res.weighted_sum, plan, summaries[0].features)


def site_label_counts(data: FederatedDataset, classes: int) -> dict[str, F64]:
    """Every client's label counts: the non-IID picture of a simulated federation."""
    out = {}
    for cid in range(data.num_clients):
        _, y = _arrays(data, cid)
        out[site_name(cid)] = label_histogram(y, classes, len(y))
    return out
