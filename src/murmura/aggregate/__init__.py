"""Aggregation rules: pure functions on a ``(n, d)`` float32 matrix, and their registry."""

from murmura.aggregate import mean
from murmura.aggregate.base import AGGREGATORS, Aggregator, Rule, make_aggregator
from murmura.aggregate.bulyan import bulyan, bulyan_select
from murmura.aggregate.clipping import centered_clipping, norm_bounding
from murmura.aggregate.flame import flame
from murmura.aggregate.foolsgold import FoolsGold, foolsgold_credibility
from murmura.aggregate.geometric_median import geometric_median
from murmura.aggregate.krum import krum, krum_select, multi_krum
from murmura.aggregate.mean import weighted_mean
from murmura.aggregate.median import coordinate_median
from murmura.aggregate.trimmed_mean import trimmed_mean
from murmura.aggregate.weak_dp import weak_dp

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "FoolsGold",
    "Rule",
    "bulyan",
    "bulyan_select",
    "centered_clipping",
    "coordinate_median",
    "flame",
    "foolsgold_credibility",
    "geometric_median",
    "krum",
    "krum_select",
    "make_aggregator",
    "mean",
    "multi_krum",
    "norm_bounding",
    "trimmed_mean",
    "weak_dp",
    "weighted_mean",
]
