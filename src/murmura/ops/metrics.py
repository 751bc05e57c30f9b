"""Prometheus metrics of a coordinator: rounds, workers, exchanged bytes, refusals, accuracy.

Each coordinator owns a ``CollectorRegistry`` (never prometheus_client's global one), so several
coordinators, or tests, share a process. The transport knows nothing of it: the coordinator
hands ``observe`` the hub's events (the ones its audit ledger gets), ``round_finished`` each
round's ``RoundMetrics``, and ``update_received`` the payload size of each decoded update.

Label values come from small fixed sets (refusal kinds, failure reasons and phases, evaluation
kinds, privacy budget names), never node ids, so the number of series does not grow with the
number of workers. ``murmura.ops.metrics_http`` serves the registry.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from murmura.types import RoundMetrics, Scalar

log = logging.getLogger(__name__)

REFUSAL_KINDS = (
    "allowlist",
    "unauthenticated",
    "identity",
    "not_sampled",
    "stale",
    "replay",
    "oversized",
    "malformed",
    "other",
)
"""``murmura_refusals_total`` label values: why a call was refused before it counted."""
FAILURE_REASONS = ("timeout", "lost", "rejected", "refused", "worker_error", "dropout", "other")
"""``murmura_round_failures_total`` label values: why a sampled node did not contribute."""
PHASES = ("fit", "evaluate")
ROUND_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Seconds; a round spans local training and the exchange, from under a second to an hour."""

_BY_CODE = {
    "UNAUTHENTICATED": "unauthenticated",
    "FAILED_PRECONDITION": "stale",  # another run, a closed round, a result of the other phase
    "ALREADY_EXISTS": "replay",
    "RESOURCE_EXHAUSTED": "oversized",
    "INVALID_ARGUMENT": "malformed",
}


def refusal_kind(code: str, reason: str) -> str:
    """The ``REFUSAL_KINDS`` value of a ``refuse`` event from its gRPC status and reason.

    PERMISSION_DENIED covers three refusals; the transport's reasons tell them apart.
    """
    if code != "PERMISSION_DENIED":
        return _BY_CODE.get(code, "other")
    if "allowlist" in reason or "certificate role" in reason:
        return "allowlist"
    if "certificate says" in reason:
        return "identity"
    if "not sampled" in reason or "cohort" in reason:
        return "not_sampled"
    return "other"


def failure_reason(reason: str) -> tuple[str, str]:
    """``(phase, reason)`` label values of a round failure's free-text reason."""
    phase = "evaluate" if reason.startswith("evaluate: ") else "fit"
    text = reason.removeprefix("evaluate: ")
    if text.startswith("secagg: "):
        text = text.removeprefix("secagg: ")
        if text.startswith(("dropped", "left the round")):
            return phase, "dropout"
    if text.startswith("worker error") or "raised" in text:  # its fit or evaluate raised
        return phase, "worker_error"
    if text.startswith(("update rejected", "rejected")):
        return phase, "rejected"
    if "last error" in text or text.startswith("refused"):  # its uploads were refused
        return phase, "refused"
    if text.startswith("lost"):
        return phase, "lost"
    if "deadline" in text:
        return phase, "timeout"
    return phase, "other"


class CoordinatorMetrics:
    """The metrics of one coordinator, in a registry of their own."""

    def __init__(self, process: bool = True) -> None:
        """Create every metric; ``process`` adds CPU, memory and file descriptors."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.run = Info("murmura_run", "The run this coordinator serves.", registry=r)
        self.rounds_planned = Gauge(
            "murmura_rounds_planned", "Rounds the run is configured for.", registry=r
        )
        self.current_round = Gauge(
            "murmura_current_round", "The round in progress, or the last one completed.", registry=r
        )
        self.rounds_completed = Counter(
            "murmura_rounds_completed",
            "Rounds completed (checkpoint written) by this process.",
            registry=r,
        )
        self.round_duration = Histogram(
            "murmura_round_duration_seconds",
            "Wall time of a round: sampling, training, exchange, aggregation, evaluation.",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.participants = Counter(
            "murmura_round_participants",
            "Updates aggregated, summed over completed rounds.",
            registry=r,
        )
        self.failures = Counter(
            "murmura_round_failures",
            "Sampled nodes that did not contribute to a completed round, by phase and reason.",
            ["phase", "reason"],
            registry=r,
        )
        self.workers = Gauge(
            "murmura_workers_connected",
            "Workers heard from within lost_after seconds.",
            registry=r,
        )
        self.joins = Counter("murmura_joins", "Workers that registered (joins).", registry=r)
        self.refusals = Counter(
            "murmura_refusals",
            "Calls refused by the endpoint, by kind (allowlist, identity, stale, replay, ...).",
            ["kind"],
            registry=r,
        )
        self.results = Counter(
            "murmura_results_received",
            "Results accepted into a round, by phase.",
            ["phase"],
            registry=r,
        )
        self.received_bytes = Counter(
            "murmura_update_received_bytes",
            "Update payload bytes read in full from workers (float32 values; framing excluded).",
            registry=r,
        )
        self.sent_bytes = Counter(
            "murmura_model_sent_bytes",
            "Model payload bytes served to workers (float32 values; framing excluded).",
            registry=r,
        )
        self.accuracy = Gauge(
            "murmura_test_accuracy",
            "Accuracy of the global model at the last evaluation (central or federated).",
            ["evaluation"],
            registry=r,
        )
        self.loss = Gauge(
            "murmura_test_loss",
            "Loss of the global model at the last evaluation (central or federated).",
            ["evaluation"],
            registry=r,
        )
        self.epsilon = Gauge(
            "murmura_dp_epsilon",
            "Differential privacy epsilon spent so far, by budget (only with DP on).",
            ["budget"],
            registry=r,
        )
        for kind in REFUSAL_KINDS:  # every known series exists from the start, at 0
            self.refusals.labels(kind=kind)
        for phase in PHASES:
            self.results.labels(phase=phase)
            for why in FAILURE_REASONS:
                self.failures.labels(phase=phase, reason=why)
        if process:
            ProcessCollector(registry=r)

    def start_run(self, run_id: str, planned_rounds: int, last_round: int) -> None:
        """A run starts or resumes after ``last_round``."""
        self.run.info({"run_id": run_id})
        self.rounds_planned.set(planned_rounds)
        self.current_round.set(last_round)

    def round_started(self, round_: int) -> None:
        """Round ``round_`` opens."""
        self.current_round.set(round_)

    def round_finished(self, m: RoundMetrics) -> None:
        """A round is completed: count it, its participants and failures; keep its figures."""
        self.rounds_completed.inc()
        self.round_duration.observe(m.seconds)
        self.participants.inc(m.participants)
        for f in m.failures:
            phase, why = failure_reason(f.reason)
            self.failures.labels(phase=phase, reason=why).inc()
        figures = {
            "central": (m.test_accuracy, m.test_loss),
            "federated": (m.federated_accuracy, m.federated_loss),
        }
        for evaluation, (acc, loss) in figures.items():
            if acc is not None:
                self.accuracy.labels(evaluation=evaluation).set(acc)
            if loss is not None:
                self.loss.labels(evaluation=evaluation).set(loss)
        for key, value in m.extra.items():  # "epsilon", "sample_epsilon": the strategy's budgets
            if key.endswith("epsilon") and isinstance(value, int | float):
                self.epsilon.labels(budget=key).set(float(value))

    def observe(self, event: str, node: str, round_: int, details: Mapping[str, Scalar]) -> None:
        """Take one of the hub's events (``murmura.transport.hub.Events``).

        A ``repeated`` event stands for ``count`` more of the event it names.
        """
        times = 1.0
        if event == "repeated":
            event, times = str(details.get("repeat_of", "")), _non_negative(details.get("count", 0))
        if event == "refuse":
            kind = refusal_kind(str(details.get("code", "")), str(details.get("reason", "")))
            self.refusals.labels(kind=kind).inc(times)
        elif event == "join":
            self.joins.inc(times)
        elif event == "model_sent":
            self.sent_bytes.inc(times * _non_negative(details.get("bytes", 0)))
        elif event in ("update_received", "result_received"):
            phase = "evaluate" if details.get("kind") == "EVALUATE" else "fit"
            self.results.labels(phase=phase).inc()

    def update_received(self, nbytes: int) -> None:
        """An update of ``nbytes`` payload bytes was read in full (accepted or rejected)."""
        self.received_bytes.inc(nbytes)

    def set_connected(self, workers: int) -> None:
        """Workers alive now."""
        self.workers.set(workers)

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format, version 0.0.4."""
        return bytes(generate_latest(self.registry))


def _non_negative(value: Scalar | None) -> float:
    return float(value) if isinstance(value, int | float) and value > 0 else 0.0
