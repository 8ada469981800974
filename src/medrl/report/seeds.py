"""Arms run once per seed (`seeds`), pooled for the report: Table 1 shows the mean over seeds and their spread,
Findings test the paired evidence of every seed at once and say in how many seeds each claim holds.

Pooling for the paired tests: every (seed, question) pair is a stratum of its own, arm k of seed s paired with its
counterpart of the same seed (an untrained arm's one evaluation stands in every seed). The Cochran-Mantel-Haenszel
test over such 1:1 matched strata reduces to McNemar's test on the discordant pairs summed over the strata
(Mantel & Haenszel 1959, JNCI 22:719; Agresti, Categorical Data Analysis, 3rd ed. 2013, sec. 11.1); its exact form,
used here, is the binomial test of the summed b against b + c. Seeds share their test questions, so the strata are
not independent draws of questions: the p-value speaks to training noise over a fixed test set, and the per-seed
agreement ("reproduced in 2 of 3 seeds") is reported beside it. A pooled "reproduced" that most seeds do not
reproduce on their own arms is driven by a minority of the seeds (one lucky seed can carry the summed discordant
pairs): it is reported as "not reproduced in most seeds", never as reproduced.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

from medrl.report.arm import ArmResult
from medrl.report.findings import MINORITY_OF_SEEDS, NOT_MEASURED, REPRODUCED

_STATUS_ORDER = ("unavailable", "unscored", "incomplete", "ok")


def _worst(statuses: list[str]) -> str:
    """The status a pooled cell carries: the worst of its seeds' (one Table 1 does not know is kept as it is).

    >>> _worst(["ok", "incomplete"]), _worst(["ok", "skipped"]), _worst([])
    ('incomplete', 'skipped', 'ok')
    """
    unknown = [s for s in statuses if s not in _STATUS_ORDER]
    if unknown:
        return unknown[0]
    return min(statuses, key=_STATUS_ORDER.index) if statuses else "ok"


def _pooled_metric(per_seed: list[dict]) -> dict:
    """Mean over seeds of the per-seed means, their spread (sample std over seeds), and the seeds' own means.

    >>> m = _pooled_metric([{"mean": 0.5, "n": 10}, {"mean": 0.7, "n": 10}, {"mean": 0.6, "n": 10}])
    >>> round(m["mean"], 6), round(m["std"], 6), m["seeds"], m["n"]
    (0.6, 0.1, 3, 30)
    """
    means = [m["mean"] for m in per_seed if m.get("mean") is not None]
    statuses = [m.get("status", "ok") for m in per_seed]
    out: dict[str, Any] = {
        "mean": statistics.fmean(means) if means else None,
        "std": statistics.stdev(means) if len(means) > 1 else 0.0 if means else None,
        "n": sum(m.get("n") or 0 for m in per_seed),
        "seeds": len(means),
        "seed_means": means,
        "status": _worst(statuses),
    }
    for key in ("model", "proxy", "kind", "reason"):
        if per_seed and key in per_seed[0]:
            out[key] = per_seed[0][key]
    return out


def _tagged(predictions: list[dict], seed: int) -> list[dict]:
    return [{**row, "id": f"seed{seed}:{row['id']}"} for row in predictions]


def pool(arms: list[ArmResult], specs: dict[str, Any]) -> tuple[list[ArmResult], dict[str, Any], dict[int, list]]:
    """(pooled arms, their specs, per seed: the arms of that seed under their study names) for a run whose config
    expanded `seeds`; a run of one seed per arm is returned as it is, with no per-seed arms."""
    seeds = sorted({spec.seed for spec in specs.values() if getattr(spec, "seed_of", None)})
    if not seeds:
        return arms, specs, {}
    by_name = {a.name: a for a in arms}
    groups: dict[str, list[str]] = {}
    for name, spec in specs.items():
        groups.setdefault(spec.seed_of or name, []).append(name)
    pooled, pooled_specs = [], {}
    per_seed: dict[int, list[ArmResult]] = {s: [] for s in seeds}
    for group, members in groups.items():
        done = [by_name[m] for m in members if m in by_name]
        if not done:
            continue
        first = specs[members[0]]
        spec = first.model_copy(update={"seed_of": None})
        if spec.init.startswith("arm:") and specs.get(spec.init[4:]) is not None:
            parent = specs[spec.init[4:]]
            spec = spec.model_copy(update={"init": f"arm:{parent.seed_of or spec.init[4:]}"})
        pooled_specs[group] = spec
        seed_of = {specs[a.name].seed: a for a in done} if first.seed_of else dict.fromkeys(seeds, done[0])
        for seed, arm in seed_of.items():
            per_seed[seed].append(replace(arm, name=group))
        keys = {k for a in done for k, v in a.metrics.items() if isinstance(v, dict)}
        metrics = {k: _pooled_metric([a.metrics[k] for a in done if isinstance(a.metrics.get(k), dict)]) for k in keys}
        if not first.seed_of:
            metrics = done[0].metrics  # evaluated once: its own spread over questions
        predictions = [row for seed, arm in sorted(seed_of.items()) for row in _tagged(arm.predictions, seed)]
        logs = {seed: arm.train_log for seed, arm in sorted(seed_of.items())} if first.seed_of else {}
        pooled.append(
            replace(
                done[0],
                name=group,
                metrics=metrics,
                predictions=predictions,
                repeated=not first.seed_of,
                train_log=[] if first.seed_of else done[0].train_log,
                seed_logs=logs,
            )
        )
    return pooled, pooled_specs, per_seed


def agreement(pooled_findings: list[dict], per_seed: dict[int, list[dict]]) -> None:
    """Add to each pooled finding in how many seeds the claim is reproduced on that seed's own arms, out of the
    seeds whose arms both finished: a seed where one of the two failed (or was not evaluated, or the claim could not
    be measured) is named under `failed`, not counted as a seed that did not reproduce it."""
    for entry in pooled_findings:
        agreed, finished, failed = 0, 0, []
        for seed, found in per_seed.items():
            own = next(e for e in found if e["claim"] == entry["claim"])
            # with an arm missing, that seed's roles may match other arms: only the pooled pair counts
            same_arms = "arm" in entry and (own.get("arm"), own.get("than")) == (entry["arm"], entry["than"])
            if not same_arms or own["verdict"] == NOT_MEASURED:
                failed.append(seed)
                continue
            finished += 1
            agreed += own["verdict"] == REPRODUCED
        entry["seeds"] = {"reproduced": agreed, "of": finished, "failed": failed}
        if entry["verdict"] == REPRODUCED and 2 * agreed <= finished:
            entry["verdict"] = MINORITY_OF_SEEDS
