"""deploy/grafana's dashboard queries only metrics, and labels, that a coordinator exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from murmura.ops.metrics import CoordinatorMetrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "murmura-coordinator.json"
NAME = re.compile(r"\b((?:murmura|process)_[a-z_]+)\b")
LABELS = re.compile(r"(?:by|without)\s*\(([^)]*)\)|[{,]\s*([a-z_]+)\s*=~?")
PROMETHEUS_LABELS = {"job", "instance", "le"}  # added by the scrape, or a histogram's buckets


def exported() -> dict[str, set[str]]:
    """Every sample name a coordinator serves, with the label names its metric declares."""
    metrics = CoordinatorMetrics()
    declared = {
        m._name: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
    }
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    out = {  # a labelled metric has no sample until its first labels() call
        m._name + suffix: set(m._labelnames)
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase)
        for suffix in suffixes.get(m._type, ("",))
    }
    for family in metrics.registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(declared.get(family.name, set()))
    return out


def queries() -> list[str]:
    body = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in body["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in body["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_every_queried_metric_is_exported() -> None:
    served = exported()
    used = {name for expr in queries() for name in NAME.findall(expr)}
    assert len(used) >= 15  # the dashboard covers the coordinator, not a token panel
    assert used - served.keys() == set()


def test_every_label_a_query_uses_belongs_to_its_metrics() -> None:
    served = exported()
    for expr in queries():
        allowed = PROMETHEUS_LABELS.union(*(served[n] for n in NAME.findall(expr)))
        for by, selector in LABELS.findall(expr):
            used = {x.strip() for x in by.split(",") if x.strip()} | ({selector} - {""})
            assert used <= allowed, f"{expr}: labels {used - allowed} are not exported"


def test_the_checks_catch_a_misspelt_metric() -> None:
    assert "murmura_round_failure_total" not in exported()
    assert "murmura_round_failures_total" in exported()
