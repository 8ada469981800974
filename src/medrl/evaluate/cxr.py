"""Chest X-ray metrics: ROUGE-L and CheXpert label F1 (micro and macro over the 14 observations) for report
generation; mAP@0.5 (greedy IoU matching per sample) and the soft box F1 for grounding; optional model-based
report scores (BERTScore) when their weights are configured, listed as skipped otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from medrl.config import ReportScorer
from medrl.data.cxr.common import box_scale
from medrl.data.records import Record
from medrl.rewards.grounding import Box, box_f1, iou, parse_boxes, reference_boxes
from medrl.rewards.parse import final_text
from medrl.rewards.report_quality import OBSERVATIONS, extract_labels, label_f1, positive_set, rouge_l

MODEL_SCORERS: tuple[ReportScorer, ...] = ("bertscore", "ratescore", "radcliq", "green")


def average_precision(predicted: list[Box | None], reference: list[Box], threshold: float = 0.5) -> float:
    """AP of one sample at an IoU threshold. Boxes count in the order generated (the first is the most
    confident); each takes the unmatched reference box it overlaps most and is a hit at IoU >= threshold.
    AP = sum over hits of the precision at that rank / number of reference boxes; malformed boxes are misses.

    >>> average_precision([(0, 0, .5, .5), (.5, .5, 1, 1)], [(.5, .5, 1, 1)])
    0.5
    >>> average_precision([], []), average_precision([(0, 0, 1, 1)], []), average_precision([], [(0, 0, 1, 1)])
    (1.0, 0.0, 0.0)
    """
    if not reference:
        return 1.0 if not predicted else 0.0
    free = list(range(len(reference)))
    hits, total = 0, 0.0
    for rank, box in enumerate(predicted, 1):
        if box is None or not free:
            continue
        best = max(free, key=lambda j: iou(box, reference[j]))
        if iou(box, reference[best]) >= threshold:
            free.remove(best)
            hits += 1
            total += hits / rank
    return total / len(reference)


def label_f1_scores(generated: list[str], reference: list[str]) -> dict[str, float | None]:
    """Micro F1 (pooled over observations and reports) and macro F1 (mean over observations that either side
    has) of the present CheXpert observations (positive or uncertain). "No edema." alone is a normal report
    (No Finding present), so it disagrees with "Edema." twice.

    >>> label_f1_scores(["Cardiomegaly.", "Edema."], ["Cardiomegaly.", "No edema."])
    {'micro': 0.5, 'macro': 0.3333333333333333}
    """
    counts = {obs: [0, 0, 0] for obs in OBSERVATIONS}  # tp, fp, fn
    for gen, ref in zip(generated, reference, strict=True):
        g, r = positive_set(extract_labels(gen)), positive_set(extract_labels(ref))
        for obs in g & r:
            counts[obs][0] += 1
        for obs in g - r:
            counts[obs][1] += 1
        for obs in r - g:
            counts[obs][2] += 1
    tp, fp, fn = (sum(c[k] for c in counts.values()) for k in range(3))
    micro = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    per_obs = [2 * c[0] / (2 * c[0] + c[1] + c[2]) for c in counts.values() if sum(c)]
    return {"micro": micro, "macro": statistics.fmean(per_obs) if per_obs else None}


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values) if values else None,
        "std": statistics.pstdev(values) if len(values) > 1 else 0.0 if values else None,
        "n": len(values),
        "missing": 0,
    }


def _scalar(value: float | None, n: int) -> dict[str, Any]:
    """A dataset-level score (F1 micro/macro, mAP) in the metrics layout; it has no per-question spread."""
    return {"mean": value, "std": None, "n": n, "missing": 0}


def bertscore_f1(generated: list[str], reference: list[str], model_dir: str) -> list[float]:
    """BERTScore F1: each token's best cosine match among the other text's contextual token embeddings,
    averaged both ways (precision, recall), from the encoder at `model_dir` (no IDF weighting, no rescaling)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()

    def embed(text: str):
        enc = tokenizer(text or " ", return_tensors="pt", truncation=True, max_length=512)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state[0]
        keep = [i for i, t in enumerate(enc["input_ids"][0].tolist()) if t not in tokenizer.all_special_ids]
        vectors = hidden[keep] if keep else hidden
        return torch.nn.functional.normalize(vectors, dim=-1)

    out = []
    for gen, ref in zip(generated, reference, strict=True):
        if not gen.strip():
            out.append(0.0)
            continue
        sim = embed(gen) @ embed(ref).T
        precision, recall = sim.max(dim=1).values.mean().item(), sim.max(dim=0).values.mean().item()
        out.append(2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0)
    return out


def model_scores(generated: list[str], reference: list[str], scorers: Mapping[ReportScorer, str]) -> tuple[dict, dict]:
    """Model-based report scores for the configured scorers; (per-report values, {scorer: why skipped})."""
    values: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for name in MODEL_SCORERS:
        weights = scorers.get(name)
        if not weights:
            skipped[name] = "no weights in evaluate.report_scorers"
        elif name == "bertscore":
            values[name] = bertscore_f1(generated, reference, weights)
        else:
            skipped[name] = "not implemented in this build"
    return values, skipped


def score_tasks(
    records: list[Record], rows: list[dict], metrics: dict, scorers: Mapping[ReportScorer, str] | None = None
) -> dict:
    """Add report and grounding scores to the prediction rows and metrics of an evaluation (whose VQA metrics
    were computed over the VQA questions only). Returns `metrics` unchanged for a VQA-only set."""
    if all(rec.task == "vqa" for rec in records):
        return metrics
    metrics = dict(metrics)
    reports: list[tuple[str, str, dict]] = []
    groundings: list[tuple[list[Box | None], list[Box], dict]] = []
    for rec, row in zip(records, rows, strict=True):
        row["task"] = rec.task
        if rec.task == "vqa":
            continue
        row["correct"] = None  # accuracy is a VQA metric
        answer = final_text(row["completion"])
        if rec.task == "report":
            reports.append((answer, rec.report or rec.answer, row))
        else:
            groundings.append((parse_boxes(answer, box_scale(rec.meta)), reference_boxes(rec.boxes), row))
    if reports:
        generated, reference = [g for g, _, _ in reports], [r for _, r, _ in reports]
        for gen, ref, row in reports:
            row["rouge_l"] = rouge_l(gen, ref)
            row["label_f1"] = label_f1(gen, ref)
        f1 = label_f1_scores(generated, reference)
        metrics["rouge_l"] = _summary([row["rouge_l"] for _, _, row in reports])
        metrics["label_f1"] = _summary([row["label_f1"] for _, _, row in reports])
        metrics["label_f1_micro"] = _scalar(f1["micro"], len(reports))
        metrics["label_f1_macro"] = _scalar(f1["macro"], len(reports))
        values, skipped = model_scores(generated, reference, scorers or {})
        for name, scores in values.items():
            for (_, _, row), score in zip(reports, scores, strict=True):
                row[name] = score
            metrics[name] = _summary(scores)
        metrics["skipped_scorers"] = skipped
    if groundings:
        for predicted, expected, row in groundings:
            row["box_f1"] = box_f1(predicted, expected)
            row["ap50"] = average_precision(predicted, expected)
        metrics["box_f1"] = _summary([row["box_f1"] for _, _, row in groundings])
        metrics["map50"] = _scalar(statistics.fmean(row["ap50"] for _, _, row in groundings), len(groundings))
    return metrics
