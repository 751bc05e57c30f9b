"""Weighted mean of client updates: the FedAvg rule (McMahan et al. 2017)."""

from __future__ import annotations

from murmura.aggregate.base import AGGREGATORS, Aggregator, Matrix, Rule, Vector, normalized
from murmura.aggregate.distances import combine


def weighted_mean(updates: Matrix, weights: Vector) -> Vector:
    """Return ``sum_i w_i x_i / sum_i w_i`` as float32, one pass over the matrix."""
    return combine(normalized(weights), updates)


@AGGREGATORS.register("weighted_mean")
def _weighted_mean_rule() -> Aggregator:
    return Rule("weighted_mean", weighted_mean, linear=True)
