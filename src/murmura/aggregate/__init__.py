"""Aggregation rules: pure functions on a ``(n, d)`` float32 matrix, and their registry."""

from murmura.aggregate import mean
from murmura.aggregate.base import AGGREGATORS, Aggregator, Rule, make_aggregator
from murmura.aggregate.mean import weighted_mean

__all__ = ["AGGREGATORS", "Aggregator", "Rule", "make_aggregator", "mean", "weighted_mean"]
