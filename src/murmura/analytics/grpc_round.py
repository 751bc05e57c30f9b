"""The statistics phase over gRPC: the coordinator asks, each worker answers from its own rows.

It is a phase of the first round, as federated evaluation is one of every round: the
coordinator opens the round on the hub with kind STATS and the query (compact JSON under
``stats_query``, no model), every connected worker computes its summary on its local training
data (``site_answer``) and pushes only those numbers, and the coordinator checks each answer
on arrival (``murmura.analytics.wire``: a malformed one makes the site a failure of the phase
with the reason), merges them in node order, noises them if asked and writes ``stats.json``
and the label picture into the run folder. A resumed run that has ``stats.json`` skips it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from murmura.analytics import wire
from murmura.analytics.federation import StatsPlan, release, site_summary
from murmura.analytics.query import StatsQuery
from murmura.analytics.report import STATS_FILE, write_stats
from murmura.analytics.result import FederatedStats
from murmura.analytics.summary import Summary, merge_all
from murmura.errors import InstructionRejected
from murmura.transport.channel import Channel
from murmura.transport.hub import Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import Scalar

log = logging.getLogger(__name__)

STATS_KEY = "stats_query"
"""The instruction's config key that carries the ``StatsQuery`` as JSON."""


def site_answer(client: object, config: Mapping[str, Scalar]) -> tuple[list[float], int]:
    """A worker's answer: its summary's numbers and row count; raises if it cannot answer.

    The client must expose ``local_data() -> (inputs, labels)`` (``TorchClient`` does).
    """
    text = config.get(STATS_KEY)
    if set(config) != {STATS_KEY} or not isinstance(text, str):
        raise InstructionRejected(f"a statistics instruction carries only {STATS_KEY!r}")
    query = StatsQuery.from_json(text)
    local_data = getattr(client, "local_data", None)
    if not callable(local_data):
        raise InstructionRejected("this worker's client has no local_data() to summarise")
    x, y = local_data()
    labels = np.asarray(y) if query.classes else None
    summary = site_summary(np.asarray(x), labels, StatsPlan(query))
    return wire.encode(summary).tolist(), int(summary.count)


async def wait_for_nodes(hub: Channel, min_nodes: int, timeout_s: float) -> list[str]:
    """The live nodes once ``min_nodes`` are (or ``timeout_s`` has passed)."""
    deadline = time.monotonic() + timeout_s
    while len(hub.alive()) < min_nodes and time.monotonic() < deadline:
        await hub.wait_for_join(min(1.0, deadline - time.monotonic()))
    return hub.alive()


async def statistics_phase(
    hub: Channel,
    plan: StatsPlan,
    round_: int,
    folder: Path,
    nodes: list[str],
    timeout_s: float,
) -> FederatedStats | None:
    """Run the phase with ``nodes``; write and return the statistics (None: no answer)."""
    if (folder / STATS_FILE).exists():
        log.info("node=coordinator round=%d: statistics already in %s", round_, folder)
        return None
    answers: dict[str, Summary] = {}

    def sink(node: str, r: int, res: DecodedResult) -> None:
        summary = wire.decode(np.asarray(res.stats, dtype=np.float64), plan.query)
        first = next(iter(answers.values()), summary)
        if summary.features != first.features:
            raise ValueError(f"{summary.features} features, the other sites {first.features}")
        answers[node] = summary

    config: dict[str, Scalar] = {STATS_KEY: plan.query.to_json()}
    log.info("node=coordinator round=%d: statistics asked of %d nodes", round_, len(nodes))
    await hub.open_round(Outgoing(round_, pb.STATS, config, None), frozenset(nodes), sink)
    outcome = await hub.collect(timeout_s)
    failures = {n: f"statistics: {why}" for n, why in sorted(outcome.failures.items())}
    for node, why in failures.items():
        log.warning("node=%s round=%d: failed: %s", node, round_, why)
    if not answers:
        log.warning("node=coordinator round=%d: no site answered the statistics", round_)
        return None
    ordered = sorted(answers)  # arrival order must not change the figures' bits
    merged = await asyncio.to_thread(merge_all, [answers[n] for n in ordered])
    site_labels = {n: answers[n].labels for n in ordered}
    stats = release(merged, plan, len(ordered), site_labels, failures)
    await asyncio.to_thread(write_stats, folder, stats)
    log.info(
        "node=coordinator round=%d: statistics of %g rows from %d sites written",
        round_, stats.count, stats.sites,
    )  # fmt: skip
    return stats
