"""The report's chest X-ray section: a row per arm with report-generation and grounding metrics, in Table 1's
style (mean (± std) over test records; F1 micro/macro and mAP are dataset-level, so without spread)."""

from __future__ import annotations

from medrl.report.arm import ArmResult, cell, data_scale

# (metrics.json key, column title, scale, show std)
CXR_COLUMNS = [
    ("rouge_l", "ROUGE-L ↑", 100.0, True),
    ("label_f1_micro", "Label F1 micro ↑", 100.0, False),
    ("label_f1_macro", "Label F1 macro ↑", 100.0, False),
    ("bertscore", "BERTScore ↑", 100.0, True),
    ("map50", "mAP@0.5 ↑", 100.0, False),
    ("box_f1", "Box F1 (IoU) ↑", 100.0, True),
]


def cxr_rows(arms: list[ArmResult]) -> tuple[list[str], list[list[str]]]:
    """Only the columns some arm measured."""
    columns = [c for c in CXR_COLUMNS if any(arm.metrics.get(c[0]) for arm in arms)]
    header = ["Model", "Fine-tuning data", *(title for _, title, _, _ in columns)]
    rows = [
        [arm.label, data_scale(arm), *(cell(arm.metrics.get(key), scale, std) for key, _, scale, std in columns)]
        for arm in arms
    ]
    return header, rows


def cxr_blocks(arms: list[ArmResult]) -> list[tuple]:
    """Report blocks of the section; none when no arm was scored on report or grounding records."""
    if not any(arm.metrics.get(key) for arm in arms for key, _, _, _ in CXR_COLUMNS):
        return []
    skipped: dict[str, str] = {}
    for arm in arms:
        skipped.update(arm.metrics.get("skipped_scorers") or {})
    header, rows = cxr_rows(arms)
    blocks: list[tuple] = [
        ("h2", "Chest X-ray report generation and grounding"),
        ("table", header, rows, "cxr"),
        (
            "p",
            "ROUGE-L: longest common word subsequence F1 with the reference report. Label F1: agreement on the 14 "
            "CheXpert observations (present = positive or uncertain) extracted by medrl's rule-based labeler, "
            "pooled over reports (micro) or averaged over observations (macro). mAP@0.5: average precision per "
            "image at IoU 0.5, boxes taken in the order generated, averaged over grounding questions. Box F1: the "
            "grounding reward (matched IoUs over the mean number of predicted and reference boxes). All in percent.",
        ),
    ]
    if skipped:
        blocks.append(
            ("p", "Model-based scores skipped: " + "; ".join(f"{k} ({v})" for k, v in sorted(skipped.items())))
        )
    return blocks
