"""The judge's counters: requests by outcome and their latency, cache hits and misses, verdicts scored or not.
Registered in the process's REGISTRY (training's /metrics) and pushed with the evaluate stage's gauges."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from medrl.metrics import REGISTRY
from medrl.metrics.outcomes import OUTCOMES

# Every outcome a judge request can end in, and "other" for anything else.
JUDGE_OUTCOMES = (*OUTCOMES, "other")
JUDGE_REQUESTS = Counter(
    "medrl_judge_requests", "Judge requests by outcome: " + ", ".join(JUDGE_OUTCOMES), ["outcome"], registry=REGISTRY
)
JUDGE_LATENCY = Histogram(
    "medrl_judge_request_duration_seconds",
    "Seconds from sending a judge request to its answer (or failure).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
JUDGE_CACHE_HITS = Counter("medrl_judge_cache_hits", "Judge verdicts served from the cache.", registry=REGISTRY)
JUDGE_CACHE_MISSES = Counter("medrl_judge_cache_misses", "Judge verdicts not in the cache.", registry=REGISTRY)
JUDGE_VERDICTS = Counter(
    "medrl_judge_verdicts", "Completions judged, by outcome: scored or unscorable.", ["outcome"], registry=REGISTRY
)
JUDGE_UNSCORABLE = Gauge(
    "medrl_judge_unscorable_ratio", "Fraction of the last judged batch that could not be scored.", registry=REGISTRY
)
for _outcome in JUDGE_OUTCOMES:
    JUDGE_REQUESTS.labels(_outcome)
for _outcome in ("scored", "unscorable"):
    JUDGE_VERDICTS.labels(_outcome)


def judge_request(outcome: str, seconds: float) -> None:
    """Count one judge request and its latency. `outcome` is one of JUDGE_OUTCOMES (else counted as 'other')."""
    JUDGE_REQUESTS.labels(outcome if outcome in JUDGE_OUTCOMES else "other").inc()
    JUDGE_LATENCY.observe(max(seconds, 0.0))


def judge_cache(hit: bool, n: int = 1) -> None:
    """Count `n` cache lookups that hit (or missed)."""
    (JUDGE_CACHE_HITS if hit else JUDGE_CACHE_MISSES).inc(n)


def judge_verdicts(scored: int, unscorable: int) -> None:
    """Count a batch's verdicts; the unscorable ratio gauge shows this batch's share."""
    JUDGE_VERDICTS.labels("scored").inc(scored)
    JUDGE_VERDICTS.labels("unscorable").inc(unscorable)
    if scored + unscorable:
        JUDGE_UNSCORABLE.set(unscorable / (scored + unscorable))


JUDGE_COLLECTORS = (
    JUDGE_REQUESTS,
    JUDGE_LATENCY,
    JUDGE_CACHE_HITS,
    JUDGE_CACHE_MISSES,
    JUDGE_VERDICTS,
    JUDGE_UNSCORABLE,
)
