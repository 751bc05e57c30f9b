"""What a statistics round asks every site: the histogram ranges, the classes, min/max or not.

The query is all a site needs to compute its sums, so it is what the coordinator sends in the
round's instruction (as compact JSON under one config key); nothing else about the job is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from murmura.config.stats import StatsSection
from murmura.errors import ConfigError, InstructionRejected

MAX_FEATURES = 100_000
"""Most features a query may ask for: bounds the sums a site computes and sends."""
MAX_CELLS = 400_000
"""Most numbers one site's answer may carry (features x (bins + 4) + classes): 3.2 MB fits
the default 4 MiB gRPC message."""


@dataclass(frozen=True, slots=True)
class StatsQuery:
    """Fixed-bin histograms over ``[low, high]`` per feature, ``classes`` labels, min/max.

    ``low``/``high`` of length 1 apply to every feature (the sites' feature count decides);
    otherwise their length is the number of features. ``classes`` 0: no label histogram.
    ``clip``: sites clip every value to its range first (bounded contributions, for secure
    aggregation and DP).
    """

    low: tuple[float, ...]
    high: tuple[float, ...]
    bins: int = 10
    classes: int = 0
    minmax: bool = True
    clip: bool = False

    def __post_init__(self) -> None:
        if len(self.low) != len(self.high) or not 1 <= len(self.low) <= MAX_FEATURES:
            raise ConfigError(f"query ranges: {len(self.low)} lows and {len(self.high)} highs")
        for j, (lo, hi) in enumerate(zip(self.low, self.high, strict=True)):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ConfigError(f"query range of feature {j}: [{lo}, {hi}] is not finite")
        if not 1 <= self.bins <= 1000 or not 0 <= self.classes <= 100_000:
            raise ConfigError(f"query: bins {self.bins}, classes {self.classes} out of range")

    def bounds(self, features: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-feature ``(low, high)`` for data of ``features`` columns; else ``ConfigError``."""
        if len(self.low) not in (1, features):
            raise ConfigError(
                f"the data has {features} features, [stats] low/high give {len(self.low)}"
            )
        if features > MAX_FEATURES or features * (self.bins + 4) + self.classes > MAX_CELLS:
            raise ConfigError(f"{features} features x {self.bins} bins is too large a query")
        low = np.broadcast_to(np.asarray(self.low, dtype=np.float64), (features,))
        high = np.broadcast_to(np.asarray(self.high, dtype=np.float64), (features,))
        return low, high

    def to_json(self) -> str:
        """Compact JSON: what travels in the instruction."""
        body = {
            "low": list(self.low),
            "high": list(self.high),
            "bins": self.bins,
            "classes": self.classes,
            "minmax": self.minmax,
            "clip": self.clip,
        }
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> StatsQuery:
        """Parse a query from the wire; anything malformed is ``InstructionRejected``."""
        try:
            body = json.loads(text)
            return cls(
                low=_floats(body["low"]),
                high=_floats(body["high"]),
                bins=_int(body["bins"]),
                classes=_int(body["classes"]),
                minmax=_bool(body["minmax"]),
                clip=_bool(body["clip"]),
            )
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            raise InstructionRejected(f"malformed statistics query: {exc}") from None


def _floats(values: Sequence[object]) -> tuple[float, ...]:
    if not isinstance(values, list) or len(values) > MAX_FEATURES:
        raise ValueError("low/high must be lists of numbers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"{v!r} is not a number")
        out.append(float(v))
    return tuple(out)


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{value!r} is not a boolean")
    return value


def query_from_config(section: StatsSection, classes: int) -> StatsQuery:
    """The query of a ``[stats]`` section; ``classes`` counts when the section leaves it None."""
    lows = tuple(map(float, section.low if isinstance(section.low, list) else [section.low]))
    highs = tuple(map(float, section.high if isinstance(section.high, list) else [section.high]))
    n = max(len(lows), len(highs))
    lows, highs = lows * (n // len(lows)), highs * (n // len(highs))
    private = section.secure_aggregation or section.noise_multiplier > 0
    classes = section.classes or classes
    return StatsQuery(lows, highs, section.bins, classes, section.minmax, clip=private)
