"""`ms-cxr`: phrase grounding from MS-CXR (`MS_CXR_Local_Alignment_*.csv`: dicom_id, label_text, x, y, w, h,
image_width, image_height; one row per box) on MIMIC-CXR-JPG images. Rows of one phrase on one image become one
grounding record with all its boxes, normalised to 0..1.

The image of a row is its `path` column when the file has one, else found under `data.images` (the
MIMIC-CXR-JPG folder) through the metadata CSV, or by walking its `files/` tree once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.cxr.common import cxr_input, find_file, grounding_record, normalize_box, read_csv, split_of
from medrl.data.cxr.mimic_cxr import METADATA_CSV, study_dir
from medrl.data.sources import PrepError, Row

SOURCE = "ms-cxr"
COLUMNS = ["dicom_id", "label_text", "x", "y", "w", "h", "image_width", "image_height"]


def annotation_file(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("MS_CXR_Local_Alignment*.csv*")) if path.is_dir() else []
    if not found:
        raise PrepError(
            f"data.input={path}: no MS_CXR_Local_Alignment_*.csv there; give the MS-CXR folder or the CSV itself"
        )
    return found[-1]  # the newest version


def image_index(images_root: Path) -> dict[str, str | None]:
    """dicom_id -> image path relative to the MIMIC-CXR-JPG root; None for an image whose metadata row had more
    cells than the header (its path cannot be trusted)."""
    try:
        metadata = find_file(images_root, [METADATA_CSV], SOURCE)
    except PrepError:
        metadata = None
    if metadata:
        return {
            r["dicom_id"]: None if r.malformed else f"{study_dir(r['subject_id'], r['study_id'])}/{r['dicom_id']}.jpg"
            for r in read_csv(metadata)
        }
    return {p.stem: p.relative_to(images_root).as_posix() for p in (images_root / "files").rglob("*.jpg")}


def source(cfg: DataConfig, staging: Path) -> tuple[Path, Iterator[Row]]:
    csv_path = annotation_file(cxr_input(cfg, SOURCE, "grounding", "the MS-CXR folder or its CSV"))
    images_root = Path(cfg.images) if cfg.images else csv_path.parent
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    malformed: set[str] = set()  # images with a row of more cells than the header
    for row in read_csv(csv_path, COLUMNS):
        groups[(row["dicom_id"], row["label_text"])].append(row)
        if row.malformed:
            malformed.add(row["dicom_id"])  # a comma in its phrase cut it: which phrase the box is of is unknown
    index: dict[str, str | None] | None = None

    def rows() -> Iterator[Row]:
        nonlocal index
        for number, ((dicom_id, phrase), group) in enumerate(groups.items(), 1):
            if dicom_id in malformed:
                yield Row(number, reason="row_malformed")
                continue
            if not phrase:
                yield Row(number, reason="phrase_empty")
                continue
            try:
                normalized = [
                    normalize_box(
                        float(r["x"]),
                        float(r["y"]),
                        float(r["x"]) + float(r["w"]),
                        float(r["y"]) + float(r["h"]),
                        float(r["image_width"]),
                        float(r["image_height"]),
                    )
                    for r in group
                ]
            except ValueError:
                yield Row(number, reason="box_not_numeric")
                continue
            boxes = [b for b in normalized if b is not None]
            if len(boxes) < len(normalized):
                yield Row(number, reason="box_invalid")
                continue
            rel = group[0].get("path", "")
            if not rel:
                if index is None:
                    index = image_index(images_root)
                if dicom_id in index and index[dicom_id] is None:
                    yield Row(number, reason="row_malformed")
                    continue
                rel = index.get(dicom_id) or ""
            if not rel:
                yield Row(number, reason="image_not_found")
                continue
            split = group[0].get("split", "").lower()
            parts = rel.split("/")
            patient = parts[2] if len(parts) > 3 else dicom_id  # files/pXX/pSUBJECT/...: split by patient
            split = ("test" if split == "test" else "train") if split else split_of(patient)
            meta = {"category": group[0].get("category_name", "")}
            rid = f"mscxr-{dicom_id}-{number}"
            yield Row(
                number, record=grounding_record(rid, rel, phrase, boxes, SOURCE, split, meta, box_scale=cfg.box_scale)
            )

    return images_root, rows()
