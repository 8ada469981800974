"""Summaries and tests for Table 1: mean (± std), a bootstrap 95% interval, and McNemar's paired test.

Pure functions over lists; None marks a value that could not be measured and is counted, never guessed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def summarize(values: Sequence[float | None]) -> dict:
    """mean, std (population, as Table 1 reports) and n; None values (unscorable) are left out and counted.

    >>> summarize([1.0, 0.0, None, 1.0])
    {'mean': 0.6666666666666666, 'std': 0.4714045207910317, 'n': 3, 'missing': 1}
    """
    present = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return {
        "mean": statistics.fmean(present) if present else None,
        "std": statistics.pstdev(present) if len(present) > 1 else 0.0 if present else None,
        "n": len(present),
        "missing": len(values) - len(present),
    }


def bootstrap_ci(values: Sequence[float], samples: int = 2000, seed: int = 0, level: float = 0.95) -> list | None:
    """Percentile bootstrap interval of the mean; None for no values. Deterministic for a seed.

    >>> bootstrap_ci([1.0] * 10)
    [1.0, 1.0]
    >>> lo, hi = bootstrap_ci([1.0, 0.0] * 50); lo < 0.5 < hi
    True
    """
    import numpy as np

    data = np.asarray([v for v in values if v is not None], dtype=float)
    if data.size == 0:
        return None
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(samples, data.size))].mean(axis=1)
    tail = (1.0 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def mcnemar(baseline: Sequence[bool], other: Sequence[bool]) -> dict:
    """Exact McNemar test on paired outcomes (same questions): b = only the baseline right, c = only the other.

    The two-sided p-value is the binomial test of b against b + c discordant pairs at 1/2.

    >>> mcnemar([True, True, False, False], [True, False, True, True])
    {'n': 4, 'b': 1, 'c': 2, 'p_value': 1.0}
    >>> round(mcnemar([False] * 20, [True] * 20)["p_value"], 8)
    1.91e-06
    """
    from scipy.stats import binomtest

    if len(baseline) != len(other):
        raise ValueError("mcnemar: the two arms must be scored on the same questions")
    b = sum(1 for x, y in zip(baseline, other, strict=True) if x and not y)
    c = sum(1 for x, y in zip(baseline, other, strict=True) if y and not x)
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"n": len(baseline), "b": b, "c": c, "p_value": p}
