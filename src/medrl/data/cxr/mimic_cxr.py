"""`mimic-cxr`: report generation from MIMIC-CXR-JPG (`files/pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg`, the split,
CheXpert-label and optional metadata CSVs) with the free-text reports (`files/pXX/pSUBJECT/sSTUDY.txt`, from
mimic-cxr-reports) unpacked into the same `files/` tree. One record per study: a frontal image and the report
cut into its findings and impression sections.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.cxr.common import OBSERVATIONS, cxr_input, find_file, read_csv, report_record
from medrl.data.sources import PrepError, Row

SOURCE = "mimic-cxr"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
FRONTAL = ("PA", "AP")

# A section header: an upper-case name and a colon at the start of a line ("FINDINGS:", "IMPRESSION:").
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z /&()-]*[A-Z)]):", re.MULTILINE)


def report_sections(text: str) -> dict[str, str]:
    """A report's sections by upper-case header, whitespace collapsed.

    >>> report_sections("FINAL REPORT\\n EXAMINATION: CHEST\\n FINDINGS:\\n No effusion.\\n\\n IMPRESSION: Normal.")
    {'EXAMINATION': 'CHEST', 'FINDINGS': 'No effusion.', 'IMPRESSION': 'Normal.'}
    """
    heads = list(_HEADER.finditer(text))
    out = {}
    for head, nxt in zip(heads, [*heads[1:], None], strict=True):
        body = text[head.end() : nxt.start() if nxt else len(text)]
        out[head.group(1).strip()] = " ".join(body.split())
    return out


def report_target(findings: str, impression: str) -> str:
    """The report a model learns to write: findings, then impression, each when present."""
    parts = [f"Findings: {findings}" if findings else "", f"Impression: {impression}" if impression else ""]
    return " ".join(p for p in parts if p)


def study_dir(subject: str, study: str) -> str:
    """The folder of a study in the MIMIC-CXR-JPG tree.

    >>> study_dir("10000032", "50414267")
    'files/p10/p10000032/s50414267'
    """
    return f"files/p{subject[:2]}/p{subject}/s{study}"


def _labels(row: dict[str, str]) -> dict[str, int]:
    out = {}
    for obs in OBSERVATIONS:
        value = row.get(obs, "")
        if value not in ("", "nan"):
            out[obs] = int(float(value))
    return out


def source(cfg: DataConfig, staging: Path) -> tuple[Path, Iterator[Row]]:
    root = cxr_input(cfg, SOURCE, "report", "the MIMIC-CXR-JPG folder (with files/)")
    split_path = find_file(root, [SPLIT_CSV], SOURCE)
    studies: dict[tuple[str, str], dict] = {}
    images: dict[tuple[str, str], list[str]] = defaultdict(list)
    malformed: set[tuple[str, str]] = set()  # studies with a row of more cells than its file's header
    for row in read_csv(split_path, ["dicom_id", "study_id", "subject_id", "split"]):
        key = (row["subject_id"], row["study_id"])
        studies.setdefault(key, {"split": "test" if row["split"] == "test" else "train"})
        if row.malformed:
            malformed.add(key)
            continue
        images[key].append(row["dicom_id"])
    views: dict[str, str] = {}
    try:
        metadata = find_file(root, [METADATA_CSV], SOURCE)
    except PrepError:
        metadata = None  # optional: without it the first image of a study is taken
    for r in read_csv(metadata) if metadata else []:
        if r.malformed:
            malformed.add((r.get("subject_id", ""), r.get("study_id", "")))
        else:
            views[r["dicom_id"]] = r.get("ViewPosition", "")
    labels: dict[tuple[str, str], dict[str, int]] = {}
    try:
        chexpert = find_file(root, [CHEXPERT_CSV], SOURCE)
    except PrepError:
        chexpert = None
    for r in read_csv(chexpert) if chexpert else []:
        key = (r.get("subject_id", ""), r.get("study_id", ""))
        if r.malformed:
            malformed.add(key)  # its labels may be another observation's
        else:
            labels[key] = _labels(r)

    def rows() -> Iterator[Row]:
        for number, (key, info) in enumerate(sorted(studies.items()), 1):
            subject, study = key
            if key in malformed:
                yield Row(number, reason="row_malformed")
                continue
            if not (subject.isdigit() and study.isdigit()):
                yield Row(number, reason="bad_ids")
                continue
            ids = sorted(images[key])
            frontal = [d for d in ids if views.get(d) in FRONTAL]
            dicom_id = (sorted(frontal, key=lambda d: FRONTAL.index(views[d])) or ids)[0]
            report_path = root / f"{study_dir(subject, study)}.txt"
            if not report_path.is_file():
                yield Row(number, reason="report_missing")
                continue
            sections = report_sections(report_path.read_text(encoding="utf-8", errors="replace"))
            findings, impression = sections.get("FINDINGS", ""), sections.get("IMPRESSION", "")
            if not findings and not impression:
                yield Row(number, reason="report_sections_missing")
                continue
            meta = {"findings": findings, "impression": impression, "chexpert": labels.get(key, {})}
            rec = report_record(
                f"mimic-s{study}",
                f"{study_dir(subject, study)}/{dicom_id}.jpg",
                report_target(findings, impression),
                SOURCE,
                info["split"],
                meta,
            )
            yield Row(number, record=rec)

    return root, rows()
