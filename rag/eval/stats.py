"""Summary statistics shared by every report (rag eval, rag eval-beir, bench/): one definition each."""

from __future__ import annotations

import math


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-quantile: the smallest value with at least a share ``q`` of values at or below it.

    p50 and p95 everywhere (eval reports, BEIR latency, benchmarks) mean this; 0.0 for no values.

    Example:
        >>> [percentile(list(range(1, 101)), q) for q in (0.5, 0.95, 1.0)]
        [50, 95, 100]
        >>> percentile([3.0, 1.0, 2.0], 0.5)
        2.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(round(q * len(ordered), 9)))  # rounded first: 0.07 · 100 is 7.000000000000001
    return ordered[min(rank, len(ordered)) - 1]
