"""`medrl prep`: read a source, check every row, quarantine the bad ones with a reason, write the dataset.

The prepared directory holds train.jsonl, test.jsonl, images/, quarantine.jsonl and summary.json; it is
written to a staging folder and committed whole, so a failed prep never looks like a finished one.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from medrl.config import DataConfig
from medrl.data import synthetic
from medrl.data.cxr import mimic_cxr, ms_cxr, vindr_cxr
from medrl.data.cxr import synthetic as cxr_synthetic
from medrl.data.records import LETTERS, Record, write_json, write_jsonl


class PrepError(RuntimeError):
    """The source cannot be prepared; the message names the input and the fix."""


@dataclass
class Row:
    """One source row: a parsed record, or the reason it could not be parsed. `number` is 1-based."""

    number: int
    record: Record | None = None
    reason: str | None = None


# A source yields rows whose image paths are relative to the returned root.
Source = Callable[[DataConfig, Path], tuple[Path, Iterator[Row]]]

MAX_IMAGE_PIXELS = 64_000_000


def _synthetic(cfg: DataConfig, staging: Path) -> tuple[Path, Iterator[Row]]:
    n_train = cfg.train_size or 256
    n_test = cfg.test_size or 64

    def rows() -> Iterator[Row]:
        recs = synthetic.generate(n_train + n_test, staging, cfg.seed, cfg.image_size)
        for i, rec in enumerate(recs):
            rec.split = "train" if i < n_train else "test"
            yield Row(number=i + 1, record=rec)

    return staging, rows()


SOURCES: dict[str, Source] = {
    "synthetic": _synthetic,
    "cxr-synthetic": cxr_synthetic.source,
    "mimic-cxr": mimic_cxr.source,
    "ms-cxr": ms_cxr.source,
    "vindr-cxr": vindr_cxr.source,
}


def check_image(root: Path, rel: str) -> str | None:
    """Reason code if the image at `rel` (relative to `root`) is unusable, else None. Never decodes bombs."""
    path = (root / rel).resolve()
    if Path(rel).is_absolute() or ".." in Path(rel).parts or not path.is_relative_to(root.resolve()):
        return "image_path_outside_root"
    if not path.is_file():
        return "image_missing"
    if path.stat().st_size == 0:
        return "image_empty"
    try:
        with Image.open(path, formats=["PNG", "JPEG"]) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                return "image_too_large"
            im.load()
    except Image.DecompressionBombError:
        return "image_too_large"
    except Exception:
        return "image_unreadable"
    return None


def check_record(rec: Record, root: Path) -> str | None:
    if not rec.question.strip():
        return "question_empty"
    if rec.choices:
        if rec.answer not in rec.choices:
            return "answer_not_in_choices"
        if rec.answer_label and rec.answer_label != LETTERS[rec.choices.index(rec.answer)]:
            return "label_mismatch"
    for rel in rec.images:
        reason = check_image(root, rel)
        if reason:
            return reason
    return None


def prepare(cfg: DataConfig, out: Path) -> dict:
    """Write the prepared dataset for `cfg` into the (empty, staging) directory `out`; return the summary."""
    if cfg.source not in SOURCES:
        raise PrepError(f"unknown data source '{cfg.source}'; choose one of: {', '.join(SOURCES)}")
    out.mkdir(parents=True, exist_ok=True)
    root, rows = SOURCES[cfg.source](cfg, out)
    kept: dict[str, list[Record]] = {"train": [], "test": []}
    quarantine: list[dict] = []
    seen: set[tuple] = set()
    total = 0
    for row in rows:
        total += 1
        reason = row.reason
        rec = row.record
        if rec is not None and reason is None:
            reason = check_record(rec, root)
        if rec is not None and reason is None:
            key = (tuple(rec.images), rec.question.strip().lower())
            if key in seen:
                reason = "duplicate"
            seen.add(key)
        if reason or rec is None:
            quarantine.append({"source_row": row.number, "reason": reason or "unparsable"})
        else:
            kept[rec.split].append(rec)

    bad = Counter(q["reason"] for q in quarantine if q["reason"] != "duplicate")
    bad_fraction = sum(bad.values()) / max(total, 1)
    if bad_fraction > cfg.max_bad_fraction:
        top = ", ".join(f"{r} ({n})" for r, n in bad.most_common(3))
        raise PrepError(
            f"{sum(bad.values())} of {total} rows of source '{cfg.source}' are bad ({bad_fraction:.1%} > "
            f"data.max_bad_fraction={cfg.max_bad_fraction}): {top}. Fix the input or raise the limit."
        )

    rng = random.Random(cfg.seed)
    sizes = {"train": cfg.train_size, "test": cfg.test_size}
    for split, recs in kept.items():
        if sizes[split] is not None and len(recs) > sizes[split]:
            kept[split] = sorted(rng.sample(recs, sizes[split]), key=lambda r: r.id)
    if root.resolve() != out.resolve():
        for rec in kept["train"] + kept["test"]:
            for rel in rec.images:
                dst = out / "images" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, dst)
            rec.image = [f"images/{p}" for p in rec.images] if isinstance(rec.image, list) else f"images/{rec.image}"

    write_jsonl(out / "train.jsonl", kept["train"])
    write_jsonl(out / "test.jsonl", kept["test"])
    write_jsonl(out / "quarantine.jsonl", quarantine)
    summary = {
        "source": cfg.source,
        "rows": total,
        "train": len(kept["train"]),
        "test": len(kept["test"]),
        "quarantined": len(quarantine),
        "reasons": dict(Counter(q["reason"] for q in quarantine)),
    }
    write_json(out / "summary.json", summary)
    return summary
