"""The report's Data section: what prep kept, what it quarantined and why, and the train/test leak check."""

from __future__ import annotations


def data_blocks(summary: dict | None) -> list[tuple]:
    """Report blocks for a prepared dataset's summary.json (none without one).

    >>> blocks = data_blocks({"source": "synthetic", "train": 8, "test": 3, "reasons": {"leak": 1},
    ...     "leak_check": {"mode": "image", "distance": 8, "leaked": 1}})
    >>> blocks[1][2][-1]
    ['test rows left out as copies of training images (leak)', '1']
    """
    if not summary:
        return []
    rows = [
        ["source", str(summary.get("source", "-"))],
        ["training rows", str(summary.get("train", "-"))],
        ["test rows", str(summary.get("test", "-"))],
    ]
    reasons = {k: v for k, v in (summary.get("reasons") or {}).items() if k != "leak"}
    if reasons:
        rows.append(["quarantined (bad or duplicate rows)", ", ".join(f"{k} {v}" for k, v in reasons.items())])
    leak = summary.get("leak_check")
    notes = []
    if leak is None:
        notes.append(
            "This dataset was prepared before the leak check existed: test rows were not compared with training images."
        )
    elif leak.get("mode") == "off":
        notes.append("The leak check was off (data.leak_check: off): test rows were not compared with training images.")
    else:
        rows.append(["test rows left out as copies of training images (leak)", str(leak.get("leaked", 0))])
        what = (
            "the same or a near copy of a training image"
            if leak["mode"] == "image"
            else ("a training image (or a near copy) asked the same question as a training row")
        )
        notes.append(
            f"Leak check: a test row whose image is {what} (same bytes, same pixels, or a perceptual hash within "
            f"{leak.get('distance')} bits and matching grey levels) leaves the test split as `leak` "
            "(quarantine.jsonl)."
        )
    return [("h2", "Data"), ("table", ["", "count"], rows, "data"), ("list", notes)]
