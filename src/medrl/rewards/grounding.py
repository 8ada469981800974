"""Visual grounding reward: boxes `[x1, y1, x2, y2]` (0..scale, the record's meta.box_scale) parsed from the
answer, matched one-to-one to the reference boxes, scored as a soft F1: 2 * (sum of matched IoUs) / (predicted +
reference boxes).
"""

from __future__ import annotations

import re
from typing import Any

from medrl.data.cxr.common import Box, iou
from medrl.rewards.parse import completion_text, final_text

# Innermost [...] groups: "[[a,b,c,d],[e,f,g,h]]" yields both inner boxes.
_GROUP_RE = re.compile(r"\[([^\[\]]*)\]")
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def parse_box(text: str, scale: float = 1) -> Box | None:
    """A box (in 0..1) from the inside of one bracket group answered at `scale`, or None when it is malformed:
    not four numbers, a value outside 0..scale, or no area. Swapped corners name the same rectangle and are put
    in order.

    >>> parse_box("0.5, 0.6, 0.1, 0.2"), parse_box("0.1, 0.2, 1.3, 0.4"), parse_box("0.1, 0.2, 0.1, 0.4")
    ((0.1, 0.2, 0.5, 0.6), None, None)
    >>> parse_box("500, 600, 100, 200", 1000), parse_box("100, 200, 1001, 400", 1000)
    ((0.1, 0.2, 0.5, 0.6), None)
    """
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 4 or not all(_NUMBER_RE.match(p) for p in parts):
        return None
    x1, y1, x2, y2 = (float(p) for p in parts)
    if not all(0.0 <= v <= scale for v in (x1, y1, x2, y2)):
        return None
    x1, y1, x2, y2 = (v / scale for v in (x1, y1, x2, y2))
    x1, x2 = min(x1, x2), max(x1, x2)
    y1, y2 = min(y1, y2), max(y1, y2)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def parse_boxes(text: str, scale: float = 1) -> list[Box | None]:
    """Every bracket group of `text` that holds a digit, as a box (0..1) or None (malformed), in order.

    >>> parse_boxes("left: [0.1, 0.2, 0.3, 0.4]; right: [0.6, 0.2, 0.9] []")
    [(0.1, 0.2, 0.3, 0.4), None]
    """
    return [parse_box(g, scale) for g in _GROUP_RE.findall(text) if any(c.isdigit() for c in g)]


def matched_ious(predicted: list[Box | None], reference: list[Box]) -> list[float]:
    """IoUs of the one-to-one matching of predicted to reference boxes with the largest total IoU (Hungarian);
    malformed predictions match nothing."""
    valid = [b for b in predicted if b is not None]
    if not valid or not reference:
        return []
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    table = np.array([[iou(p, r) for r in reference] for p in valid])
    rows, cols = linear_sum_assignment(table, maximize=True)
    return [float(table[i, j]) for i, j in zip(rows, cols, strict=True)]


def box_f1(predicted: list[Box | None], reference: list[Box]) -> float:
    """Soft F1 of a box set: matched IoUs summed, divided by the mean of the two set sizes. Each missing or
    extra (or malformed) box lowers it; an empty answer for an image without boxes scores 1.

    >>> box_f1([(0, 0, 0.5, 0.5)], [(0, 0, 0.5, 0.5)]), box_f1([(0, 0, 0.5, 0.5), None], [(0, 0, 0.5, 0.5)])
    (1.0, 0.6666666666666666)
    >>> box_f1([], []), box_f1([], [(0, 0, 1, 1)]), box_f1([(0, 0, 1, 1)], [])
    (1.0, 0.0, 0.0)
    """
    if not predicted and not reference:
        return 1.0
    return 2.0 * sum(matched_ious(predicted, reference)) / (len(predicted) + len(reference))


def reference_boxes(boxes: Any) -> list[Box]:
    """Reference boxes as ordered tuples (records hold lists of four floats in 0..1)."""
    out = []
    for b in boxes or []:
        x1, y1, x2, y2 = (float(v) for v in b)
        out.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    return out


def grounding_reward(
    completions: list[Any],
    boxes: list[Any] | None = None,
    task: list[str] | None = None,
    box_scale: list[int] | None = None,
    **kwargs: Any,
) -> list[float | None]:
    """Soft box F1 of each completion's final answer (parsed at the row's `box_scale`) against the record's boxes;
    None for rows of other tasks (TRL then leaves them out of this reward), so VQA, report and grounding rows can
    share a batch.

    >>> grounding_reward(["<think>left</think>[0.1, 0.1, 0.5, 0.5]", "[0.1, 0.1, 0.5]", "x", "[100, 100, 500, 500]"],
    ...                  boxes=[[[0.1, 0.1, 0.5, 0.5]], [[0.1, 0.1, 0.5, 0.5]], [], [[0.1, 0.1, 0.5, 0.5]]],
    ...                  task=["grounding", "grounding", "report", "grounding"], box_scale=[1, 1, 1, 1000])
    [1.0, 0.0, None, 1.0]
    """
    boxes = boxes or [None] * len(completions)
    task = task or ["grounding"] * len(completions)
    scales = box_scale or [1] * len(completions)
    out: list[float | None] = []
    for completion, ref, kind, scale in zip(completions, boxes, task, scales, strict=True):
        if kind != "grounding":
            out.append(None)
            continue
        out.append(box_f1(parse_boxes(final_text(completion_text(completion)), scale), reference_boxes(ref)))
    return out
