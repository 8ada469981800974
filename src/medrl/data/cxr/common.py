"""What the chest X-ray sources share: the data.input check, CSV reading (plain or gzip, columns checked), boxes
normalised to 0..1, stable splits, and the report and grounding records."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medrl.config import DataConfig
from medrl.data.prompt import REPORT_QUESTION, format_boxes, grounding_question
from medrl.data.records import Record
from medrl.data.sources import PrepError


def find_file(root: Path, names: list[str], source: str) -> Path:
    """The first of `names` (relative to `root`, each also tried with .gz) that exists."""
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise PrepError(
        f"data.input={root}: {source} needs {' or '.join(names)} (or .gz) there; point data.input at the "
        f"folder that holds it"
    )


def cxr_input(cfg: DataConfig, source: str, task: str, what: str) -> Path:
    """data.input of a source that writes only `task` records (`what` says what to point it at)."""
    if not cfg.input:
        raise PrepError(f"data.source={source} needs data.input: {what}")
    if task not in cfg.cxr_tasks:
        raise PrepError(f"data.cxr_tasks: {source} writes {task} records only; include '{task}'")
    return Path(cfg.input)


class CsvRow(dict[str, str]):
    """A CSV row by column name. `malformed`: it had more cells than the header, so an unquoted comma shifted
    the cells after it and its values cannot be trusted; the source quarantines the record it belongs to."""

    malformed: bool = False


def read_csv(path: Path, columns: list[str] | tuple[str, ...] = ()) -> Iterator[CsvRow]:
    """Rows of a CSV file (gzip when the name ends in .gz), keys and values stripped; an error naming the file
    when its first row lacks one of `columns`. A row with more or fewer cells than the header is `malformed`."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    for i, raw_row in enumerate(csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))):
        extra = raw_row.pop(None, None)  # DictReader's list of the cells past the header's
        short = any(v is None for v in raw_row.values())  # DictReader's None for the cells a row lacks
        row = CsvRow({(k or "").strip(): (v or "").strip() for k, v in raw_row.items()})
        row.malformed = extra is not None or short
        if i == 0 and (missing := [c for c in columns if c not in row]):
            raise PrepError(f"{path.name}: columns {', '.join(missing)} are missing; is it the right file?")
        yield row


def normalize_box(x1: float, y1: float, x2: float, y2: float, width: float, height: float) -> list[float] | None:
    """A pixel box as [x1, y1, x2, y2] in 0..1 (corners ordered, clipped to the image); None when it has no
    area inside the image.

    >>> normalize_box(100, 50, 300, 250, 1000, 500)
    [0.1, 0.1, 0.3, 0.5]
    >>> normalize_box(300, 50, 100, 250, 1000, 500), normalize_box(-10, 0, 0, 10, 100, 100)
    ([0.1, 0.1, 0.3, 0.5], None)
    """
    if width <= 0 or height <= 0:
        return None
    xa, xb = sorted((x1 / width, x2 / width))
    ya, yb = sorted((y1 / height, y2 / height))
    box = [min(max(v, 0.0), 1.0) for v in (xa, ya, xb, yb)]
    if box[2] <= box[0] or box[3] <= box[1]:
        return None
    return [round(v, 6) for v in box]


def split_of(key: str, test_fraction: float = 0.2) -> str:
    """A stable train/test split by key (a patient or image id), the same on every machine.

    >>> split_of("p10000032"), split_of("p10000032") == split_of("p10000032")
    ('train', True)
    """
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return "test" if digest / 0xFFFFFFFF < test_fraction else "train"


def report_record(rid: str, image: str, report: str, source: str, split: str, meta: dict) -> Record:
    return Record(
        id=rid,
        image=image,
        question=REPORT_QUESTION,
        answer=report,
        report=report,
        task="report",
        source=source,
        split=split,
        meta=meta,
    )


def grounding_record(
    rid: str, image: str, phrase: str, boxes: list[list[float]], source: str, split: str, meta: dict, *, box_scale: int
) -> Record:
    """A grounding question whose answer writes `boxes` (0..1, as the record keeps them) at `box_scale`; the
    scale is kept in meta.box_scale, where the grounding reward and the evaluation read it back."""
    return Record(
        id=rid,
        image=image,
        question=grounding_question(phrase, box_scale),
        answer=format_boxes(boxes, box_scale),
        boxes=boxes,
        task="grounding",
        source=source,
        split=split,
        meta={"phrase": phrase, **meta, "box_scale": box_scale},
    )


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in 0..1 (answers at another scale are divided back)

# The 14 CheXpert observations: the labels of MIMIC-CXR's reports and of the report rewards.
OBSERVATIONS = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
]


def box_scale(meta: dict[str, Any] | None) -> int:
    """The scale a grounding record asked its boxes in (meta.box_scale); 1 for records written before it existed.

    >>> box_scale({"box_scale": 1000}), box_scale({})
    (1000, 1)
    """
    return int((meta or {}).get("box_scale", 1))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ordered boxes.

    >>> iou((0, 0, 1, 1), (0.5, 0, 1, 1)), iou((0, 0, 0.2, 0.2), (0.5, 0.5, 1, 1))
    (0.5, 0.0)
    """
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union
