"""Build the study report from every arm's metrics.json, predictions.jsonl and train_log.jsonl: report.md,
a self-contained report.html, figures/*.png and summary.json (the numbers, for Kubeflow and scripts).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from medrl.report import figures
from medrl.report.arm import ArmResult, cell, data_scale
from medrl.report.compare import compare
from medrl.report.cost import cost_blocks
from medrl.report.cxr import cxr_blocks
from medrl.report.data import data_blocks
from medrl.report.findings import FINDINGS_NOTE, findings, findings_rows
from medrl.report.html import to_html, to_markdown
from medrl.report.reproduce import reproducibility_blocks
from medrl.report.seeds import agreement, pool

# (metrics.json key, column title, scale, show std). Accuracy is a percentage, as in the paper.
COLUMNS = [
    ("accuracy", "Accuracy ↑", 100.0, False),
    ("similarity", "Similarity ↑", 1.0, True),
    ("perplexity", "Perplexity ↓", 1.0, True),
    ("thinking_reward", "Thinking reward ↑", 1.0, True),
    ("think_tokens", "Thinking token length", 1.0, True),
]

DEFINITIONS = [
    "Accuracy: percent of test questions whose final `<answer>` names the reference option, by its letter or its "
    "exact text (open questions: the same text after normalising case, punctuation and spaces). Strict counts "
    "only the bare letter (closed) or the exact text (open); lenient also counts an answer that names the "
    "reference option, and no other, inside a longer text.",
    "Similarity: how close the reasoning inside `<think>` is in meaning to the reference answer; a cross-encoder's "
    "score in 0..1 (the paper: cross-encoder/stsb-roberta-base) or the cosine of sentence embeddings in -1..1.",
    "Perplexity: how fluent the reasoning is to a language model, exp of its mean per-token negative "
    "log-likelihood (the paper: microsoft/biogpt); lower is more fluent.",
    "Thinking reward: a judge model's 1-10 grade of the reasoning given the question and the reference answer "
    "(the paper: Mistral-7B-Instruct).",
    "Thinking token length: tokens inside `<think>`, counted by the evaluated model's tokenizer (0 without one).",
    "Cells are mean (± population std) over test questions; similarity, perplexity and thinking reward over the "
    "answers that have reasoning. `-`: not measured; `n/a`: its model is not available here (reason below); "
    "`*`: incomplete (the judge could not score every answer); `unscored`: the judge scored no answer (reason "
    "below); `†`: measured by a proxy, not the paper's model.",
]


SEEDS_NOTE = (
    "Trained arms ran once per seed ({n} seeds: {seeds}), each evaluated on the same test questions: their cells "
    "are the mean over seeds (± the spread over seeds: the sample std of the per-seed means), accuracy included. "
    "Untrained arms were evaluated once: their cells keep the std over questions. A cell over fewer seeds (an arm "
    "that failed or was not evaluated in a seed) says over how many."
)
POOLED_NOTE = (
    "With several seeds, each accuracy test pools the paired evidence of every seed: the exact "
    "Cochran-Mantel-Haenszel test over (seed, question) strata, which for matched pairs is McNemar's test on the "
    "discordant pairs summed over seeds (Mantel & Haenszel 1959; Agresti, Categorical Data Analysis, 2013, sec. "
    "11.1); b/c are those sums. 'reproduced in k of n seeds' counts the seeds whose own arms reproduce the claim, "
    "out of the n seeds in which both arms finished (a seed where one failed is named, not counted); a pooled "
    "result that at most half of those seeds reproduce reads 'not reproduced in most seeds'."
)

# Each metric's fields in summary.json (`missing`: answers it could not measure, e.g. truncation not recorded)
SUMMARY_FIELDS = ("mean", "std", "n", "missing", "count", "status", "ci95", "model", "proxy", "seeds", "seed_means")

SLIM_FIELDS: tuple[str, ...] = ("id", "correct", "correct_strict", "correct_lenient", "answer_type", "think_tokens")
SLIM_FIELDS += ("similarity", "perplexity", "thinking_reward")


def slim_predictions(jsonl: str) -> list[dict]:
    """What the report needs of predictions.jsonl: ids, correctness and per-question metric values (no text)."""
    rows = []
    for line in jsonl.splitlines():
        if line.strip():
            row = json.loads(line)
            rows.append({k: row[k] for k in SLIM_FIELDS if k in row})
    return rows


def table1_rows(arms: list[ArmResult], spread: bool = False, seeds: int = 0) -> tuple[list[str], list[list[str]]]:
    """`spread`: arms pooled over seeds, every cell mean (± spread over seeds), accuracy too; a cell pooled over
    fewer than the study's `seeds` (a seed's arm failed or was not evaluated) says over how many."""
    header = ["Model", "Fine-tuning data", *(title for _, title, _, _ in COLUMNS)]
    rows = [
        [
            arm.label,
            data_scale(arm),
            *(_seeded_cell(arm.metrics.get(k), s, std or spread, seeds) for k, _, s, std in COLUMNS),
        ]
        for arm in arms
    ]
    return header, rows


def _seeded_cell(metric: dict | None, scale: float, show_std: bool, seeds: int) -> str:
    text = cell(metric, scale, show_std)
    pooled = (metric or {}).get("seeds")
    if seeds and pooled is not None and 0 < pooled < seeds and (metric or {}).get("mean") is not None:
        text += f" ({pooled} of {seeds} seeds)"
    return text


def table1(arms: list[ArmResult], specs: dict | None = None) -> str:
    """Table 1 as Markdown: a row per arm, the paper's five metric columns; with the run's arm `specs`, an arm run
    once per seed is one row (mean ± spread over seeds)."""
    seeded: dict = {}
    if specs:
        arms, _, seeded = pool(arms, specs)
    header, rows = table1_rows(arms, spread=bool(seeded), seeds=len(seeded))
    return to_markdown([("table", header, rows)]).rstrip("\n")


def _p(p: float | None) -> str:
    if p is None:
        return "-"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _delta(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:+.2f}"


def comparison_rows(arms: list[ArmResult], baseline: ArmResult) -> tuple[list[str], list[list[str]], list[dict]]:
    header = [
        "Model",
        "Δ Accuracy (pp)",
        "Accuracy 95% CI",
        "McNemar p (b / c)",
        "Δ Similarity (p)",
        "Δ Perplexity (p)",
        "Δ Thinking reward (p)",
        "Δ Thinking length (p)",
    ]
    rows, results = [], []
    for arm in arms:
        ci = (arm.metrics.get("accuracy") or {}).get("ci95")
        ci_text = f"{100 * ci[0]:.2f} – {100 * ci[1]:.2f}" if ci else "-"
        if arm is baseline:
            rows.append([f"{arm.label} (baseline)", "", ci_text, "", "", "", "", ""])
            continue
        result = compare(baseline, arm)
        results.append(result)
        tests, deltas = result["tests"], result["deltas"]
        acc = tests.get("accuracy")
        mc = f"{_p(acc['p_value'])} ({acc['b']} / {acc['c']})" if acc else "-"
        if acc and acc["p_value"] < 0.05:
            mc += " significant"
        row = [arm.label, _delta(deltas["accuracy"], 100.0), ci_text, mc]
        for key in ("similarity", "perplexity", "thinking_reward", "think_tokens"):
            d = _delta(deltas[key])
            row.append(d if d == "-" or key not in tests else f"{d} ({_p(tests[key]['p_value'])})")
        rows.append(row)
    return header, rows, results


def accuracy_rows(arms: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    keys = [
        ("accuracy", "Accuracy"),
        ("accuracy_strict", "Strict"),
        ("accuracy_lenient", "Lenient"),
        ("accuracy_closed_strict", "Closed strict"),
        ("accuracy_closed_lenient", "Closed lenient"),
        ("accuracy_open_strict", "Open strict"),
        ("accuracy_open_lenient", "Open lenient"),
    ]
    header = ["Model", *(t for _, t in keys), "Closed / open questions", "Cut at the token limit (%)"]
    rows = []
    for arm in arms:
        m = arm.metrics
        counts = f"{(m.get('accuracy_closed') or {}).get('n', '-')} / {(m.get('accuracy_open') or {}).get('n', '-')}"
        rows.append([arm.label, *(cell(m.get(k), 100.0, False) for k, _ in keys), counts, truncated_cell(m)])
    return header, rows


TRUNCATED_NOTE = (
    "Cut at the token limit: percent of answers whose generation reached `evaluate.max_new_tokens` without an "
    "end-of-sequence token (count of answers). A cut answer usually has no `<answer>` and counts as wrong; the "
    "length rewards (ECR, CWR) push answers toward the limit, so a drop in accuracy beside a high share here is "
    "partly truncation."
)
TRUNCATION_UNKNOWN = (
    "`unknown` (cut at the token limit): that arm's predictions were generated by an older medrl, which did not record "
    "whether an answer was cut; it is not 0. Evaluate the arm again to measure it."
)


def truncated_cell(metrics: dict) -> str:
    """'3.12 (4 of 128)'; 'unknown' for predictions that did not record truncation, never a 0.

    >>> truncated_cell({"truncated": {"mean": 0.03125, "n": 128, "count": 4, "missing": 0, "status": "ok"}})
    '3.12 (4 of 128)'
    >>> truncated_cell({"truncated": {"mean": 0.5, "n": 2, "count": 1, "missing": 6, "status": "ok"}})
    '50.00 (1 of 2; 6 unknown)'
    >>> truncated_cell({"accuracy": {"mean": 0.5}}), truncated_cell({"truncated": {"status": "unavailable"}})
    ('unknown', 'unknown')
    >>> truncated_cell({"truncated": {"mean": 0.25, "n": 256, "seeds": 2, "status": "ok"}})  # pooled over seeds
    '25.00 (n = 256)'
    >>> truncated_cell({})
    '-'
    """
    metric = metrics.get("truncated")
    if not metric:
        return "unknown" if metrics.get("accuracy") else "-"  # scored before medrl recorded it
    if metric.get("status") == "unavailable" or metric.get("mean") is None:
        return "unknown"
    n = metric.get("n", 0)
    if "count" in metric:
        text = f"{100 * metric['mean']:.2f} ({metric['count']} of {n}"
    else:  # pooled over seeds: the mean of the seeds' shares, over all their answers
        text = f"{100 * metric['mean']:.2f} (n = {n}"
    return text + (f"; {metric['missing']} unknown)" if metric.get("missing") else ")")


PROVENANCE = [
    ("accuracy", "Accuracy", "rule (answer parsing)"),
    ("similarity", "Similarity", "cross-encoder/stsb-roberta-base"),
    ("perplexity", "Perplexity", "microsoft/biogpt"),
    ("thinking_reward", "Thinking reward", "mistralai/Mistral-7B-Instruct"),
    ("think_tokens", "Thinking token length", "the evaluated model's tokenizer"),
]


def _source(metric: dict) -> str:
    if metric.get("status") == "unavailable":
        return "not available"
    if "model" not in metric:
        return metric.get("rule") or metric.get("source") or "rule"
    text = str(metric["model"]) + (f" ({metric['kind']})" if metric.get("kind") else "")
    return text + (" — proxy" if metric.get("proxy") else "")


def provenance_rows(arms: list[ArmResult]) -> tuple[list[str], list[list[str]], list[str]]:
    header = ["Metric", "The paper's model", "This run", "Status by arm"]
    rows, notes = [], []
    for key, title, paper in PROVENANCE:
        found = [(arm, metric) for arm in arms if (metric := arm.metrics.get(key))]
        if not found:
            rows.append([title, paper, "not measured", "-"])
            continue
        sources = sorted({_source(m) for _, m in found})
        statuses: dict[str, list[str]] = {}
        for arm, m in found:
            statuses.setdefault(m.get("status", "ok"), []).append(arm.label)
            note = f"{title}: {m['reason']}" if m.get("reason") else None
            if note and note not in notes:
                notes.append(note)
        status = "; ".join(f"{s}: {', '.join(labels)}" for s, labels in statuses.items())
        rows.append([title, paper, "; ".join(sources), status])
    return header, rows, notes


def _pick_baseline(arms: list[ArmResult], baseline: str | None) -> ArmResult:
    return next((a for a in arms if a.name == baseline), arms[0])


def build_report(
    title: str,
    arms: list[ArmResult],
    out_dir: Path,
    baseline: str | None = None,
    specs: dict | None = None,
    tracking: list[str] | None = None,
    data: dict | None = None,
    provenance: dict | None = None,
    run_uri: str | None = None,
    cost: dict | None = None,
) -> Path:
    """Write report.md, report.html, figures/ and summary.json into `out_dir`; returns the path of report.md.

    `specs` (arm name -> the arm's config: method, init, model, rewards) lets Findings match arms to the paper's
    claims; without it every claim is "not measured". `data`: the prepared dataset's summary.json (Data section);
    `provenance`: the run's provenance.json (Reproducibility section); `cost`: study.study_cost's document;
    `tracking`: what MLflow tracking missed, one line each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks: list[tuple] = [("h1", title)]
    if tracking:
        blocks += [("p", "MLflow tracking of this run is incomplete:"), ("list", tracking)]
    if not arms:
        blocks.append(("p", "No arm has been evaluated yet."))
        return _write(out_dir, title, blocks, {"title": title, "arms": {}})
    seeded: dict = {}
    step_labels = {a.name: a.label for a in arms}  # the Cost table lists each seed's run
    if specs:
        step_labels |= {
            n: f"{step_labels[n]} (seed {s.seed})" for n, s in specs.items() if s.seed_of and n in step_labels
        }
        arms, specs, seeded = pool(arms, specs)  # several seeds per arm: one pooled row each
        if baseline and baseline not in specs:
            baseline = re.sub(r"-seed\d+$", "", baseline)
    base = _pick_baseline(arms, baseline)

    header, rows = table1_rows(arms, spread=bool(seeded), seeds=len(seeded))
    blocks += [("h2", "Table 1"), ("table", header, rows, "table1"), ("list", DEFINITIONS)]
    if seeded:
        blocks.append(("p", SEEDS_NOTE.format(n=len(seeded), seeds=", ".join(map(str, seeded)))))

    found = findings(arms, specs)
    if seeded:
        agreement(found, {seed: findings(seed_arms, specs) for seed, seed_arms in seeded.items()})
    header, rows = findings_rows(found, {a.name: a.label for a in arms})
    blocks += [("h2", "Findings"), ("table", header, rows, "findings"), ("p", FINDINGS_NOTE)]
    if seeded:
        blocks.append(("p", POOLED_NOTE))

    header, rows, comparisons = comparison_rows(arms, base)
    blocks += [
        ("h2", f"Against the baseline: {base.label}"),
        ("table", header, rows, "compare"),
        (
            "p",
            "Δ: arm minus baseline. Accuracy: exact McNemar test on the questions both arms answered (b: only the "
            "baseline right, c: only this arm right), bootstrap 95% interval of the arm's accuracy. Other metrics: "
            "paired Wilcoxon signed-rank test per question. 'significant': p < 0.05, uncorrected for the number "
            "of arms compared.",
        ),
    ]
    header, rows = accuracy_rows(arms)
    blocks += [("h2", "Accuracy in detail"), ("table", header, rows, "accuracy"), ("p", TRUNCATED_NOTE)]
    if any("unknown" in row[-1] for row in rows):
        blocks.append(("p", TRUNCATION_UNKNOWN))

    blocks += cxr_blocks(arms)  # chest X-ray report/grounding metrics, when an arm has them
    blocks += data_blocks(data)
    blocks += cost_blocks(cost, step_labels)
    if provenance is not None or run_uri is not None:
        blocks += reproducibility_blocks(provenance, run_uri)

    header, rows, notes = provenance_rows(arms)
    blocks += [("h2", "Where each metric comes from"), ("table", header, rows, "provenance")]
    if notes:
        blocks.append(("list", notes))

    fig_dir = out_dir / "figures"
    training = [
        (figures.curve(arms, "reward", "mean reward", "Total reward during training", fig_dir / "reward_curve.png"),
         "figures/reward_curve.png", "Total reward (weighted sum of the reward functions), mean per step"),
        (figures.rewards_by_function(arms, fig_dir / "rewards_by_function.png"),
         "figures/rewards_by_function.png", "Mean of each reward function per step"),
        (figures.curve(arms, "completions/mean_length", "tokens", "Completion length",
                       fig_dir / "completion_length.png"),
         "figures/completion_length.png", "Mean completion length (tokens) per step"),
        (figures.curve(arms, "kl", "KL", "KL to the reference model", fig_dir / "kl.png"),
         "figures/kl.png", "Mean KL divergence to the reference model per step"),
    ]  # fmt: skip
    drawn = [("figure", path, caption) for ok, path, caption in training if ok]
    if drawn:
        blocks += [("h2", "Training"), *drawn]
        if seeded:
            blocks.append(("p", "An arm trained once per seed has a line per seed: its colour, a line style each."))
    by_length = figures.accuracy_vs_length(arms, fig_dir / "accuracy_vs_length.png")
    if by_length:
        blocks += [
            ("h2", "Accuracy against reasoning length"),
            ("figure", "figures/accuracy_vs_length.png", "Accuracy within groups of similar thinking length"),
        ]

    summary = {
        "title": title,
        "baseline": base.name,
        "arms": {
            a.name: {
                "label": a.label,
                "method": a.method,
                "metrics": {
                    k: {f: v for f, v in m.items() if f in SUMMARY_FIELDS}
                    for k, m in a.metrics.items()
                    if isinstance(m, dict)
                },
            }
            for a in arms
        },
        "comparisons": comparisons,
        "findings": found,
        "accuracy_by_length": by_length,
    }
    if cost:
        summary["cost"] = cost
    if provenance:
        summary["provenance"] = {
            k: provenance.get(k) for k in ("medrl", "python", "libraries", "hardware", "seeds", "splits")
        }
    if data:
        summary["data"] = {k: data.get(k) for k in ("source", "train", "test", "reasons", "leak_check")}
    return _write(out_dir, title, blocks, summary)


def _write(out_dir: Path, title: str, blocks: list[tuple], summary: dict) -> Path:
    """report.md, report.html and summary.json, each written whole under a temporary name, then renamed."""
    files = {
        "report.md": to_markdown(blocks),
        "report.html": to_html(blocks, title, out_dir),
        "summary.json": json.dumps(summary, indent=2) + "\n",
    }
    for name, text in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    return out_dir / "report.md"


def scalar_metrics(summary: dict) -> dict[str, float]:
    """Flat `<arm>_<metric>` numbers for the Kubeflow Metrics artifact (means, and the McNemar p-values)."""
    out: dict[str, float] = {}
    for arm, data in summary.get("arms", {}).items():
        for key, _, _, _ in COLUMNS:
            mean = (data["metrics"].get(key) or {}).get("mean")
            if mean is not None:
                out[f"{arm}_{key}"] = float(mean)
    for comp in summary.get("comparisons") or []:
        test = comp.get("tests", {}).get("accuracy")
        if test:
            out[f"{comp['arm']}_accuracy_mcnemar_p"] = float(test["p_value"])
    spent = (summary.get("cost") or {}).get("study") or {}
    for key in ("wall_seconds", "cpu_seconds", "gpu_seconds"):
        if spent.get(key) is not None:
            out[f"study_{key}"] = float(spent[key])
    return out
