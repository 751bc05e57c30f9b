"""Federated evaluation over gRPC: the EVALUATE phase of a round, after its aggregation.

The coordinator opens the round a second time on the hub, now with kind EVALUATE, the new
weights, and the nodes the strategy's ``sample_evaluate`` picks from those connected. Each
worker evaluates the model on its local held-out data and pushes an EVALUATE result (loss,
example count, metrics; no update). A result is checked on arrival, once its binding (run,
round, node, kind) is accepted: a NaN loss, an impossible count or too many metrics make the
node a failure of the round with the reason. A worker whose evaluation raises pushes a result
that carries only the error, which the hub lists at once ("worker error: ...") instead of at
the deadline. The strategy's ``aggregate_evaluate`` of the valid results goes into the round's
metrics line.
"""

from __future__ import annotations

import logging

from murmura.strategy.evaluation import record_federated
from murmura.strategy.hooks import evaluation_aggregate, evaluation_sample
from murmura.transport import codec
from murmura.transport.channel import Channel
from murmura.transport.hub import Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.transport.streams import DecodedResult
from murmura.types import EvaluateRes, Failure, Layout, RoundMetrics, Vector
from murmura.validation import validate_evaluation

log = logging.getLogger(__name__)


async def evaluate_round(
    hub: Channel,
    strategy: object,
    round_: int,
    weights: Vector,
    layout: Layout,
    timeout_s: float,
    metrics: RoundMetrics,
) -> None:
    """Run round ``round_``'s EVALUATE phase; put its figures and failures into ``metrics``."""
    chosen = evaluation_sample(strategy, round_, hub.alive())
    if not chosen:
        return
    results: list[tuple[str, EvaluateRes]] = []

    def sink(node: str, r: int, res: DecodedResult) -> None:
        ev = EvaluateRes(res.loss, res.num_examples, res.metrics)
        validate_evaluation(node, r, ev)
        results.append((node, ev))

    blob = codec.encode_blob(weights, layout)
    log.info("node=coordinator round=%d: evaluation sent to %d nodes", round_, len(chosen))
    await hub.open_round(Outgoing(round_, pb.EVALUATE, {}, blob), frozenset(chosen), sink)
    outcome = await hub.collect(timeout_s)
    failures = [Failure(n, f"evaluate: {why}") for n, why in sorted(outcome.failures.items())]
    for f in failures:
        log.warning("node=%s round=%d: failed: %s", f.node, round_, f.reason)
    results.sort(key=lambda item: item[0])  # arrival order must not change the figures' bits
    result = evaluation_aggregate(strategy, round_, results, failures)
    record_federated(metrics, result, [res for _, res in results])
    metrics.failures.extend(failures)
