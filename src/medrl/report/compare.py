"""Each arm against the baseline arm, question by question: McNemar on accuracy, Wilcoxon on the other metrics.

Pairs are joined by question id; an arm without stored predictions gets deltas of the means only.
"""

from __future__ import annotations

import math

from medrl.evaluate.stats import mcnemar

PAIRED = ("similarity", "perplexity", "thinking_reward", "think_tokens")


def wilcoxon(a: list[float], b: list[float]) -> float | None:
    """Two-sided paired Wilcoxon signed-rank p-value; 1.0 when every pair is equal, None for no pairs."""
    from scipy.stats import wilcoxon as test

    if not a:
        return None
    if all(x == y for x, y in zip(a, b, strict=True)):
        return 1.0
    p = float(test(a, b).pvalue)
    return None if math.isnan(p) else p


def _one_copy(pairs: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Two arms each evaluated once, their rows repeated under every seed's tag (`seed<k>:<id>`): each question
    once. Counted once per seed, the same discordant pairs would pass for independent evidence.

    >>> rows = [({"id": f"seed{s}:q{i}"}, {"id": f"seed{s}:q{i}"}) for s in (0, 1, 2) for i in (1, 2)]
    >>> [x["id"] for x, _ in _one_copy(rows)]
    ['seed0:q1', 'seed0:q2']
    """
    seen: set[str] = set()
    out = []
    for x, y in pairs:
        question = str(y["id"]).split(":", 1)[-1]
        if question not in seen:
            seen.add(question)
            out.append((x, y))
    return out


def _mean(metrics: dict, key: str) -> float | None:
    m = metrics.get(key) or {}
    return m.get("mean") if m.get("status", "ok") in ("ok", "incomplete") else None


def compare(baseline, arm) -> dict:
    """Deltas (arm - baseline) of the metric means, with paired tests where both arms have predictions."""
    out: dict = {"arm": arm.name, "baseline": baseline.name, "deltas": {}, "tests": {}}
    for key in ("accuracy", *PAIRED):
        a, b = _mean(baseline.metrics, key), _mean(arm.metrics, key)
        out["deltas"][key] = None if a is None or b is None else b - a
    base = {r["id"]: r for r in baseline.predictions}
    pairs = [(base[r["id"]], r) for r in arm.predictions if r["id"] in base]
    if getattr(baseline, "repeated", False) and getattr(arm, "repeated", False):
        pairs = _one_copy(pairs)
    if not pairs:
        return out
    out["paired_questions"] = len(pairs)
    out["tests"]["accuracy"] = {
        "test": "McNemar (exact)",
        **mcnemar([bool(x["correct"]) for x, _ in pairs], [bool(y["correct"]) for _, y in pairs]),
    }
    for key in PAIRED:
        both = [(x[key], y[key]) for x, y in pairs if x.get(key) is not None and y.get(key) is not None]
        if both:
            p = wilcoxon([x for x, _ in both], [y for _, y in both])
            out["tests"][key] = {"test": "Wilcoxon signed-rank", "n": len(both), "p_value": p}
    return out
