"""Findings: each claim of the paper beside this run's measured effect and a verdict, computed from the arms' paired
predictions. Arms are matched by their settings (method, starting point, rewards), not by their names, so the
same section appears for the demo, the full demo and the paper's preset on a cluster.

A claim is reproduced when every effect it names goes the paper's way with p < ALPHA (exact McNemar test on the
paired questions for accuracy, Wilcoxon signed-rank for reasoning length); not reproduced when the arms exist
but an effect is absent or reversed; not measured when the study has no pair of arms that tests it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medrl.report.compare import compare

ALPHA = 0.05

# The paper's Table 1 accuracies (%), Qwen2-VL-2B on PMC-VQA.
PAPER = {
    "sft": 52.00,
    "grpo_scratch": 51.56,
    "grpo": 58.04,
    "semantic": 59.86,
    "ecr": 50.17,
    "cwr": 54.68,
    "dr_grpo": 61.09,
}

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"
# Over several seeds: the pooled test passes but at most half of the seeds reproduce the claim on their own arms.
MINORITY_OF_SEEDS = "not reproduced in most seeds"
WANTS = ("higher", "lower", "not higher")


@dataclass(frozen=True)
class Check:
    """One effect a claim names: `metric` of arm `arm` against arm `than` should be `want` (see WANTS)."""

    metric: str  # accuracy | think_tokens
    want: str
    delta: float | None  # arm minus than
    p_value: float | None


def check_met(check: Check) -> bool | None:
    """Whether the measured effect goes the claimed way; None when it could not be measured.

    >>> check_met(Check("accuracy", "higher", 0.1, 0.001)), check_met(Check("accuracy", "higher", 0.1, 0.2))
    (True, False)
    >>> check_met(Check("think_tokens", "not higher", 3.0, 0.4)), check_met(Check("accuracy", "lower", None, None))
    (True, None)
    """
    if check.want not in WANTS:
        raise ValueError(f"unknown direction {check.want!r}; one of {WANTS}")
    if check.delta is None or check.p_value is None:
        return None
    higher = check.delta > 0 and check.p_value < ALPHA
    lower = check.delta < 0 and check.p_value < ALPHA
    return {"higher": higher, "lower": lower, "not higher": not higher}[check.want]


def verdict(checks: list[Check]) -> str:
    """reproduced when every check is met, not measured when one cannot be measured (or there is none), else not
    reproduced."""
    met = [check_met(c) for c in checks]
    if not met or any(m is None for m in met):
        return NOT_MEASURED
    return REPRODUCED if all(met) else NOT_REPRODUCED


# ------------------------------------------------------------------------------------------- matching arms


def _rewards(spec: Any) -> frozenset[str]:
    return frozenset(r.name for r in spec.rewards)


def _start(spec: Any) -> tuple[str, str | None]:
    return spec.init, spec.model


def start_rank(name: str, specs: dict[str, Any]) -> int:
    """How tuned an arm's starting point is: 0 an arm-specific base model (the paper's non-instruct Qwen2-VL-2B),
    1 the study's base model, 2 a model fine-tuned by another arm of the study (the demo's SFT -> GRPO).

    The paper's "instruction-tuned start against scratch" compares a GRPO arm with a less tuned start to one
    with a more tuned start, with the same rewards.
    """
    spec = specs[name]
    if spec.init.startswith("arm:"):
        return 2
    if spec.init == "base":
        return 0 if spec.model else 1
    return 1


def match_arms(specs: dict[str, Any]) -> dict[str, str]:
    """Role -> arm name for the roles the study has: grpo (the reference: GRPO with format and accuracy rewards
    from the most tuned start), grpo_scratch, semantic, ecr, cwr, dr_grpo, sft. Roles absent from the study are
    left out."""
    grpo = [n for n, s in specs.items() if s.method == "grpo"]
    plain = [n for n in grpo if _rewards(specs[n]) == {"format", "accuracy"}]
    if not plain:
        plain = [n for n in grpo if not _rewards(specs[n]) & {"semantic", "ecr", "cwr"}]
    roles: dict[str, str] = {}
    if plain:
        ref = max(plain, key=lambda n: start_rank(n, specs))  # max keeps the first of equal ranks
        roles["grpo"] = ref
        rewards, start, rank = _rewards(specs[ref]), _start(specs[ref]), start_rank(ref, specs)
        scratch = [n for n in plain if start_rank(n, specs) < rank and _rewards(specs[n]) == rewards]
        if scratch:
            roles["grpo_scratch"] = min(scratch, key=lambda n: start_rank(n, specs))
        same_start = [n for n in grpo if _start(specs[n]) == start]

        def with_rewards(wanted: frozenset[str]) -> str | None:
            return next((n for n in same_start if _rewards(specs[n]) == wanted), None)

        semantic = with_rewards(rewards | {"semantic"})
        if semantic:
            roles["semantic"] = semantic
        for extra in ("ecr", "cwr"):
            # with the semantic reward when the study has that arm (the paper's rows), else over plain GRPO
            found = with_rewards(rewards | {"semantic", extra}) or with_rewards(rewards | {extra})
            if found:
                roles[extra] = found
        dr = [n for n, s in specs.items() if s.method == "dr_grpo" and _start(s) == start and _rewards(s) == rewards]
        if dr:
            roles["dr_grpo"] = dr[0]
        parent = specs[ref].init[4:] if specs[ref].init.startswith("arm:") else None
        sft = parent if parent in specs and specs[parent].method == "sft" else None  # evaluated arms only
        sft = sft or next((n for n, s in specs.items() if s.method == "sft" and s.init == "base"), None)
        if sft:
            roles["sft"] = sft
    return roles


# ------------------------------------------------------------------------------------------- the claims


@dataclass(frozen=True)
class Claim:
    key: str
    statement: str
    arm: str  # role whose effect is measured ...
    than: str  # ... against this role
    wants: tuple[tuple[str, str], ...]  # (metric, direction)
    paper: str


def _paper(a: str, b: str, name_a: str, name_b: str) -> str:
    return f"{name_a} {PAPER[a]:.2f} vs {name_b} {PAPER[b]:.2f} ({PAPER[a] - PAPER[b]:+.2f} pp)"


CLAIMS = [
    Claim("instruct_vs_scratch", "GRPO from an instruction-tuned start is more accurate than from scratch",
          "grpo", "grpo_scratch", (("accuracy", "higher"),), _paper("grpo", "grpo_scratch", "GRPO", "from scratch")),
    Claim("semantic", "The semantic-alignment reward raises accuracy", "semantic", "grpo",
          (("accuracy", "higher"),), _paper("semantic", "grpo", "+semantic", "GRPO")),
    Claim("ecr", "ECR lengthens the reasoning and costs accuracy", "ecr", "ecr_without",
          (("think_tokens", "higher"), ("accuracy", "lower")), _paper("ecr", "semantic", "+ECR", "+semantic")),
    Claim("cwr", "CWR costs less accuracy than ECR", "cwr", "ecr",
          (("accuracy", "higher"),), _paper("cwr", "ecr", "+CWR", "+ECR")),
    Claim("dr_grpo", "Dr.GRPO is more accurate than GRPO and its reasoning no longer", "dr_grpo", "grpo",
          (("accuracy", "higher"), ("think_tokens", "not higher")), _paper("dr_grpo", "grpo", "Dr.GRPO", "GRPO")),
    Claim("grpo_vs_sft", "GRPO is more accurate than SFT", "grpo", "sft",
          (("accuracy", "higher"),), _paper("grpo", "sft", "GRPO", "SFT")),
]  # fmt: skip


def _counterpart(role: str, roles: dict[str, str], specs: dict[str, Any]) -> str | None:
    """The arm a role is measured against; `ecr_without` is the ECR arm's rewards without ECR."""
    if role != "ecr_without":
        return roles.get(role)
    ecr = roles.get("ecr")
    if not ecr:
        return None
    wanted = _rewards(specs[ecr]) - {"ecr"}
    return next((r for k, r in roles.items() if k in ("semantic", "grpo") and _rewards(specs[r]) == wanted), None)


def findings(arms: list, specs: dict[str, Any] | None) -> list[dict]:
    """One entry per claim: the arms compared, the paper's numbers, this run's effects and the verdict."""
    results = {a.name: a for a in arms}
    specs = {n: s for n, s in (specs or {}).items() if n in results}  # only evaluated arms can be compared
    roles = match_arms(specs) if specs else {}
    out = []
    for claim in CLAIMS:
        entry: dict[str, Any] = {"claim": claim.key, "statement": claim.statement, "paper": claim.paper}
        arm, than = roles.get(claim.arm), _counterpart(claim.than, roles, specs)
        if not arm or not than:
            entry.update(verdict=NOT_MEASURED, why="the study has no pair of arms that tests it", checks=[])
            out.append(entry)
            continue
        comp = compare(results[than], results[arm])
        checks = []
        for metric, want in claim.wants:
            test = comp["tests"].get(metric) or {}
            checks.append(Check(metric, want, comp["deltas"].get(metric), test.get("p_value")))
        entry.update(
            arm=arm,
            than=than,
            verdict=verdict(checks),
            checks=[{"metric": c.metric, "want": c.want, "delta": c.delta, "p_value": c.p_value} for c in checks],
        )
        if "accuracy" in comp["tests"]:
            entry["mcnemar"] = {k: comp["tests"]["accuracy"][k] for k in ("b", "c", "n")}
        if entry["verdict"] == NOT_MEASURED:
            entry["why"] = "no paired predictions for a metric it names"
        out.append(entry)
    return out


def _effect_text(entry: dict, labels: dict[str, str]) -> str:
    parts = []
    for c in entry["checks"]:
        if c["delta"] is None:
            parts.append(f"{c['metric']}: not measured")
            continue
        p = "-" if c["p_value"] is None else ("< 0.001" if c["p_value"] < 0.001 else f"{c['p_value']:.3f}")
        if c["metric"] == "accuracy":
            mc = entry.get("mcnemar")
            counts = f", b/c {mc['b']}/{mc['c']}" if mc else ""
            parts.append(f"accuracy {100 * c['delta']:+.2f} pp (McNemar p {p}{counts})")
        else:
            parts.append(f"thinking length {c['delta']:+.2f} tokens (Wilcoxon p {p})")
    return "; ".join(parts)


def _seeds_text(agreed: dict | None) -> str:
    """' (reproduced in 2 of 2 seeds; seed 2 did not finish)': the count is over the seeds whose arms finished.

    >>> _seeds_text({"reproduced": 2, "of": 3, "failed": []}), _seeds_text(None)
    (' (reproduced in 2 of 3 seeds)', '')
    >>> _seeds_text({"reproduced": 1, "of": 1, "failed": [1, 2]})
    ' (reproduced in 1 of 1 seeds; seeds 1, 2 did not finish)'
    """
    if not agreed:
        return ""
    text = f" (reproduced in {agreed['reproduced']} of {agreed['of']} seeds"
    failed = agreed.get("failed") or []
    if failed:
        text += f"; seed{'s' if len(failed) > 1 else ''} {', '.join(map(str, failed))} did not finish"
    return text + ")"


def findings_rows(entries: list[dict], labels: dict[str, str]) -> tuple[list[str], list[list[str]]]:
    header = ["Claim of the paper", "The paper (Table 1, accuracy %)", "Arms in this run", "This run's effect",
              "Verdict"]  # fmt: skip
    rows = []
    for e in entries:
        if "arm" in e:
            arms = f"{labels.get(e['arm'], e['arm'])} vs {labels.get(e['than'], e['than'])}"
            effect = _effect_text(e, labels)
        else:
            arms, effect = "-", e.get("why", "-")
        agreed = e.get("seeds") if "arm" in e else None  # a claim the study cannot test has no seeds to agree
        rows.append([e["statement"], e["paper"], arms, effect, e["verdict"] + _seeds_text(agreed)])
    return header, rows


FINDINGS_NOTE = (
    f"Computed from this run's paired predictions. A claim is reproduced when every effect it names goes the paper's "
    f"way with p < {ALPHA} (accuracy: exact McNemar test, b = questions only the second arm answers right, c = only "
    f"the first; reasoning length: Wilcoxon signed-rank test), not reproduced when an effect is absent or reversed, "
    f"and not measured when the study has no arms that test it. Arms are matched by method, starting point and "
    f"rewards. The paper's effects come from Qwen2-VL-2B on PMC-VQA; a tiny model on synthetic data shows whether "
    f"the pipeline measures them, not the size they have on real data."
)
