"""Coordinator metrics: synthetic hub events and rounds, read back from the exposition."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from murmura.ops.metrics import (
    FAILURE_REASONS,
    PHASES,
    REFUSAL_KINDS,
    CoordinatorMetrics,
    failure_reason,
    refusal_kind,
)
from murmura.transport.hub import Hub, Outgoing
from murmura.transport.proto import murmura_pb2 as pb
from murmura.types import Failure, RoundMetrics


def samples(m: CoordinatorMetrics) -> dict[str, float]:
    """``{name{k=v,...}: value}`` parsed back from the text exposition."""
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_exposition_after_synthetic_events() -> None:
    m = CoordinatorMetrics(process=False)
    m.start_run("run-1", planned_rounds=5, last_round=0)
    m.observe("join", "w0", 0, {})
    m.observe("join", "w1", 0, {})
    m.observe(
        "refuse", "x", 0, {"code": "PERMISSION_DENIED", "reason": "node 'x' not on the allowlist"}
    )
    m.observe("refuse", "w1", 1, {"code": "ALREADY_EXISTS", "reason": "upload in progress"})
    m.round_started(1)
    m.observe("model_sent", "w0", 1, {"bytes": 400, "sha256": "ab", "kind": "FIT"})
    m.observe("model_sent", "w1", 1, {"bytes": 400, "sha256": "ab", "kind": "FIT"})
    m.update_received(400)
    m.observe("update_received", "w0", 1, {"sha256": "cd", "num_examples": 3, "kind": "FIT"})
    m.observe("result_received", "w0", 1, {"sha256": "ef", "num_examples": 3, "kind": "EVALUATE"})
    m.observe("round_start", "coordinator", 1, {"cohort": 2})  # events it ignores are harmless
    m.set_connected(2)
    rnd = RoundMetrics(1, participants=1, failures=[Failure("w1", "update rejected: not finite")])
    rnd.seconds, rnd.test_accuracy, rnd.test_loss = 1.5, 0.75, 0.5
    rnd.federated_accuracy, rnd.federated_loss = 0.7, 0.6
    rnd.extra.update(epsilon=1.25, delta=1e-5, sample_epsilon=0.5)
    m.round_finished(rnd)

    got = samples(m)
    assert got["murmura_run_info{run_id=run-1}"] == 1
    assert got["murmura_rounds_planned{}"] == 5 and got["murmura_current_round{}"] == 1
    assert got["murmura_rounds_completed_total{}"] == 1
    assert got["murmura_round_duration_seconds_count{}"] == 1
    assert got["murmura_round_duration_seconds_sum{}"] == 1.5
    assert got["murmura_round_duration_seconds_bucket{le=1.0}"] == 0
    assert got["murmura_round_duration_seconds_bucket{le=2.5}"] == 1
    assert got["murmura_round_participants_total{}"] == 1
    assert got["murmura_round_failures_total{phase=fit,reason=rejected}"] == 1
    assert got["murmura_round_failures_total{phase=fit,reason=timeout}"] == 0
    assert got["murmura_workers_connected{}"] == 2
    assert got["murmura_joins_total{}"] == 2
    assert got["murmura_refusals_total{kind=allowlist}"] == 1
    assert got["murmura_refusals_total{kind=replay}"] == 1
    assert got["murmura_refusals_total{kind=stale}"] == 0
    assert got["murmura_results_received_total{phase=fit}"] == 1
    assert got["murmura_results_received_total{phase=evaluate}"] == 1
    assert got["murmura_update_received_bytes_total{}"] == 400
    assert got["murmura_model_sent_bytes_total{}"] == 800
    assert got["murmura_test_accuracy{evaluation=central}"] == 0.75
    assert got["murmura_test_loss{evaluation=federated}"] == 0.6
    assert got["murmura_dp_epsilon{budget=epsilon}"] == 1.25
    assert got["murmura_dp_epsilon{budget=sample_epsilon}"] == 0.5
    assert not any(k.startswith("murmura_dp_epsilon{budget=delta") for k in got)


def test_every_label_set_is_fixed_and_present_from_the_start() -> None:
    got = samples(CoordinatorMetrics(process=False))
    assert {k for k in got if k.startswith("murmura_refusals_total")} == {
        f"murmura_refusals_total{{kind={k}}}" for k in REFUSAL_KINDS
    }
    assert len([k for k in got if k.startswith("murmura_round_failures_total")]) == len(
        PHASES
    ) * len(FAILURE_REASONS)
    assert not any(k.startswith(("murmura_test_", "murmura_dp_")) for k in got)  # none yet


def test_each_metric_has_help_and_type_and_the_prefix() -> None:
    text = CoordinatorMetrics(process=False).exposition().decode()
    families = list(text_string_to_metric_families(text))
    assert families and all(f.name.startswith("murmura_") for f in families)
    for f in families:
        assert f.documentation, f.name
        assert f"# HELP {f.name}" in text or f"# HELP {f.name}_total" in text


def test_registries_are_separate() -> None:
    a, b = CoordinatorMetrics(process=False), CoordinatorMetrics(process=False)
    a.observe("join", "w0", 0, {})
    assert samples(a)["murmura_joins_total{}"] == 1
    assert samples(b)["murmura_joins_total{}"] == 0


def test_process_metrics_are_optional() -> None:
    assert "process_" not in CoordinatorMetrics(process=False).exposition().decode()


@pytest.mark.parametrize(
    ("code", "reason", "kind"),
    [
        ("PERMISSION_DENIED", "node 'x' not on the allowlist", "allowlist"),
        (
            "PERMISSION_DENIED",
            "node 'c' certificate role 'coordinator' is not 'worker'",
            "allowlist",
        ),
        ("PERMISSION_DENIED", "result claims node 'a', certificate says 'b'", "identity"),
        ("PERMISSION_DENIED", "claims node 'a', certificate says 'b'", "identity"),
        ("PERMISSION_DENIED", "node not sampled in round 3", "not_sampled"),
        ("PERMISSION_DENIED", "node not in round 3's secure cohort", "not_sampled"),
        ("PERMISSION_DENIED", "something new", "other"),
        ("UNAUTHENTICATED", "no client certificate", "unauthenticated"),
        ("FAILED_PRECONDITION", "round 2 is not open (current round 3)", "stale"),
        ("ALREADY_EXISTS", "a different result was already counted", "replay"),
        ("RESOURCE_EXHAUSTED", "SizeLimitExceeded: update of 9 bytes", "oversized"),
        ("INVALID_ARGUMENT", "truncated result stream", "malformed"),
        ("INTERNAL", "?", "other"),
    ],
)
def test_refusal_kind(code: str, reason: str, kind: str) -> None:
    assert refusal_kind(code, reason) == kind
    assert kind in REFUSAL_KINDS


@pytest.mark.parametrize(
    ("reason", "labels"),
    [
        ("update rejected: update is not finite", ("fit", "rejected")),
        ("evaluate: update rejected: loss is nan", ("evaluate", "rejected")),
        ("worker error: RuntimeError: injected", ("fit", "worker_error")),
        ("evaluate: worker error: OSError: disk", ("evaluate", "worker_error")),
        (
            "evaluate: update rejected: the worker's local evaluation raised",
            ("evaluate", "worker_error"),
        ),
        ("client raised ValueError: boom", ("fit", "worker_error")),
        (
            "no result before the round deadline (last error: SizeLimitExceeded: ...)",
            ("fit", "refused"),
        ),
        ("secagg: dropped at stage share (simulated)", ("fit", "dropout")),
        ("secagg: left the round (too few neighbours survived)", ("fit", "dropout")),
        ("something else", ("fit", "other")),
    ],
)
def test_failure_reason(reason: str, labels: tuple[str, str]) -> None:
    assert failure_reason(reason) == labels


def test_failure_reasons_of_a_real_hub_round() -> None:
    """The hub's own wording for a missed deadline and a lost node maps to timeout and lost."""

    async def close_round() -> dict[str, str]:
        hub = Hub("run", heartbeat_s=0.1, lost_after_s=60.0)
        hub.touch("alive")
        hub.last_seen["gone"] = hub.last_seen["alive"] - 120.0  # silent for two minutes
        await hub.open_round(Outgoing(1, pb.FIT, {}, None), frozenset({"alive", "gone"}))
        return (await hub.collect(0.05)).failures

    failures = asyncio.run(close_round())
    assert failure_reason(failures["alive"]) == ("fit", "timeout")
    assert failure_reason(failures["gone"]) == ("fit", "lost")
