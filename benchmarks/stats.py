"""Small statistics helpers: median, min-max, percentiles (no numpy)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = math.ceil(pos)
    frac = pos - lo
    return ordered[lo] + (ordered[hi] - ordered[lo]) * frac


@dataclass(frozen=True)
class Summary:
    median: float
    low: float
    high: float
    n: int

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high, "n": self.n}


def summarize(values: Sequence[float]) -> Summary | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return None
    return Summary(statistics.median(clean), min(clean), max(clean), len(clean))
