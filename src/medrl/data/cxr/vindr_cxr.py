"""`vindr-cxr`: abnormality grounding from VinDr-CXR (`annotations/annotations_{train,test}.csv`: image_id,
rad_id, class_name, x_min, y_min, x_max, y_max; DICOM images `{train,test}/<image_id>.dicom`).

Several radiologists box the same image: per class, boxes of different radiologists that overlap (IoU >= 0.4)
are one finding, fused to their mean box; a finding any radiologist boxed is kept. "No finding" rows have no
box, and such images give no grounding record. Each image with findings is converted once to an 8-bit PNG.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.cxr.common import cxr_input, find_file, grounding_record, iou, normalize_box, read_csv
from medrl.data.cxr.dicom import DicomError, dicom_to_png
from medrl.data.sources import PrepError, Row

SOURCE = "vindr-cxr"
COLUMNS = ["image_id", "class_name", "x_min", "y_min", "x_max", "y_max"]
NO_FINDING = "no finding"
FUSE_IOU = 0.4
Box = tuple[float, float, float, float]


def fuse_boxes(marks: list[tuple[str, Box]], threshold: float = FUSE_IOU) -> list[Box]:
    """One box set from several radiologists' boxes of one class: a box joins the finding it overlaps most
    (IoU >= threshold) that this radiologist has not boxed yet; each finding becomes its members' mean box.

    >>> fuse_boxes([("R1", (0, 0, 10, 10)), ("R2", (2, 0, 12, 10)), ("R2", (50, 50, 60, 60))])
    [(1.0, 0.0, 11.0, 10.0), (50.0, 50.0, 60.0, 60.0)]
    """
    clusters: list[list[tuple[str, Box]]] = []

    def mean(cluster: list[tuple[str, Box]]) -> Box:
        x1, y1, x2, y2 = (sum(b[k] for _, b in cluster) / len(cluster) for k in range(4))
        return x1, y1, x2, y2

    for rad, box in sorted(marks):
        scored = [(iou(mean(c), box), i) for i, c in enumerate(clusters) if rad not in {r for r, _ in c}]
        best = max(scored, default=(0.0, -1))
        if best[0] >= threshold:
            clusters[best[1]].append((rad, box))
        else:
            clusters.append([(rad, box)])
    return [mean(c) for c in clusters]


def annotation_files(root: Path) -> dict[str, Path]:
    out = {}
    for split in ("train", "test"):
        try:
            out[split] = find_file(root, [f"annotations/annotations_{split}.csv", f"annotations_{split}.csv"], SOURCE)
        except PrepError:
            continue
    if not out:
        raise PrepError(
            f"data.input={root}: no annotations/annotations_train.csv or annotations_test.csv; give the VinDr-CXR "
            "folder (with annotations/, train/, test/)"
        )
    return out


def dicom_path(root: Path, split: str, image_id: str) -> Path | None:
    for suffix in (".dicom", ".dcm"):
        path = root / split / f"{image_id}{suffix}"
        if path.is_file():
            return path
    return None


def source(cfg: DataConfig, staging: Path) -> tuple[Path, Iterator[Row]]:
    root = cxr_input(cfg, SOURCE, "grounding", "the VinDr-CXR folder")
    # (split, image_id) -> class -> [(radiologist, pixel box)]; images whose rows all say "No finding" stay empty.
    marks: dict[tuple[str, str], dict[str, list[tuple[str, Box]]]] = {}
    bad: dict[tuple[str, str], str] = {}
    for split, path in annotation_files(root).items():
        for row in read_csv(path, COLUMNS):
            key = (split, row["image_id"])
            classes = marks.setdefault(key, defaultdict(list))  # an image is registered even without a box
            if row.malformed:
                bad[key] = "row_malformed"  # without this row's box the image's findings are incomplete
                continue
            name = row["class_name"]
            if name.lower() == NO_FINDING:
                continue
            try:
                x1, y1, x2, y2 = (float(row[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
            except ValueError:
                bad[key] = "box_not_numeric"
                continue
            classes[name].append((row.get("rad_id") or "consensus", (x1, y1, x2, y2)))

    def rows() -> Iterator[Row]:
        number = 0
        for (split, image_id), classes in sorted(marks.items()):
            if not classes and (split, image_id) not in bad:
                continue  # "No finding": nothing to locate
            number += 1
            if (split, image_id) in bad:
                yield Row(number, reason=bad[(split, image_id)])
                continue
            src = dicom_path(root, split, image_id)
            if src is None:
                yield Row(number, reason="image_missing")
                continue
            rel = f"images/vindr/{split}/{image_id}.png"
            try:
                width, height = dicom_to_png(src, staging / rel)
            except DicomError as err:
                yield Row(number, reason=err.reason)
                continue
            for name, found in sorted(classes.items()):
                normalized = [normalize_box(*b, width, height) for b in fuse_boxes(found)]
                boxes = [b for b in normalized if b is not None]
                if len(boxes) < len(normalized):
                    yield Row(number, reason="box_invalid")
                    continue
                slug = "-".join(name.lower().replace("/", " ").split())
                meta = {"class_name": name, "radiologists": len({r for r, _ in found})}
                rec = grounding_record(
                    f"vindr-{image_id}-{slug}",
                    rel,
                    f"the {name.lower()}",
                    boxes,
                    SOURCE,
                    split,
                    meta,
                    box_scale=cfg.box_scale,
                )
                yield Row(number, record=rec)

    return staging, rows()
