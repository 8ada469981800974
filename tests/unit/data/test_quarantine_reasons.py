"""Every quarantine reason the README names is one the code gives, and each is produced here from a row (or file)
of its kind: option lists of one or thirty, a label of no option, a repeated id, malformed CSV/JSON rows, MIMIC
ids that are not numbers, an MS-CXR phrase that is empty or an image that is nowhere, and the DICOM files pydicom
reads but cannot turn into a grayscale picture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medrl.config import DataConfig
from medrl.data.cxr.dicom import DicomError, read_dicom
from medrl.data.prep import check_fields, prepare
from medrl.data.records import Record
from tests.unit.data.test_cxr import MS_HEADER, mimic_fixture, write_csv, write_dicom

ROOT = Path(__file__).resolve().parents[3]


def _readme_reasons() -> set[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| reason | meaning |") :].split("\n\n", 1)[0]
    reasons = {code for line in table.splitlines()[2:] for code in re.findall(r"`([a-z_0-9]+)`", line.split("|")[1])}
    cxr = text[text.index("quarantined as `not_dicom`") :].split("\n- ", 1)[0]
    cxr_line = cxr[cxr.index("Other quarantine reasons:") :]
    return reasons | {"not_dicom"} | set(re.findall(r"`([a-z_0-9]+)`", cxr_line))


def _code_reasons() -> set[str]:
    """Reason codes in the code: Row(reason=...), DicomError(...), and the strings the check functions return."""
    found: set[str] = set()
    for path in (ROOT / "src/medrl/data").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        found |= set(re.findall(r'reason="([a-z_0-9]+)"', text))
        found |= set(re.findall(r'DicomError\("([a-z_0-9]+)"\)', text))
    for name in ("prep.py", "images.py"):
        text = (ROOT / "src/medrl/data" / name).read_text(encoding="utf-8")
        found |= set(re.findall(r'return "([a-z_0-9]+)"', text))
        found |= set(re.findall(r'tally\.quarantine\(row, "([a-z_0-9]+)"\)', text))
    return found


def test_the_readme_names_exactly_the_reasons_the_code_gives():
    readme, code = _readme_reasons(), _code_reasons()
    assert "choices_invalid" in readme and "dicom_multiframe" in readme  # the parse found both lists
    assert readme == code, {"only in the README": readme - code, "only in the code": code - readme}


def _record(**kw) -> Record:
    base = {"id": "r", "image": "img.png", "question": "Which?", "choices": ["a", "b"], "answer": "b",
            "answer_label": "B"}  # fmt: skip
    return Record(**{**base, **kw})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"choices": ["b"], "answer_label": "A"}, "choices_invalid"),  # one option: nothing to choose
        ({"choices": ["b"], "answer_label": None}, "choices_invalid"),
        ({"choices": [f"option {i}" for i in range(30)], "answer": "option 1"}, "choices_invalid"),  # past J
        ({"choices": [f"option {i}" for i in range(11)], "answer": "option 1"}, "choices_invalid"),
        ({"choices": [f"option {i}" for i in range(10)], "answer": "option 9", "answer_label": "J"}, None),
        ({"answer_label": "Z"}, "label_invalid"),  # no option has that letter
        ({"answer_label": "C"}, "label_invalid"),  # a letter, but past the two options
        ({"answer_label": "AB"}, "label_invalid"),
        ({"answer_label": "A"}, "label_mismatch"),  # another option's letter
        ({"answer": "c"}, "answer_not_in_choices"),
        ({"choices": [], "answer": "lung", "answer_label": None}, None),  # an open question
    ],
)
def test_option_and_label_checks(change, reason):
    assert check_fields(_record(**change)) == reason


def _jsonl_source(tmp_path: Path, lines: list[str]) -> DataConfig:
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (32, 32), (120, 10, 10)).save(src / "img.png")
    (src / "data.jsonl").write_text("".join(line + "\n" for line in lines))
    return DataConfig(source="jsonl", input=str(src / "data.jsonl"), train_size=None, test_size=None,
                      max_bad_fraction=1.0)  # fmt: skip


def _quarantine(out: Path) -> dict[int, str]:
    return {e["source_row"]: e["reason"] for e in map(json.loads, (out / "quarantine.jsonl").read_text().splitlines())}


def test_jsonl_rows_are_quarantined_as_the_readme_says(tmp_path):
    good = {"id": "ok-1", "image": "img.png", "question": "Which side?", "choices": ["left", "right"],
            "answer": "left", "answer_label": "A", "split": "train"}  # fmt: skip
    rows = [
        good,
        {**good, "id": "one", "question": "Only one?", "choices": ["left"], "answer_label": None},
        {
            **good,
            "id": "thirty",
            "question": "Thirty?",
            "choices": [f"c{i}" for i in range(30)],
            "answer": "c1",
            "answer_label": "B",
        },
        {**good, "id": "z", "question": "Label Z?", "answer_label": "Z"},
        {**good, "question": "Same id, other question?"},  # the id of row 1
    ]
    lines = [json.dumps(r) for r in rows] + ['{"id": "broken", "question": ', json.dumps({**good, "nope": 1})]
    out = tmp_path / "out"
    prepare(_jsonl_source(tmp_path, lines), out)
    assert _quarantine(out) == {
        2: "choices_invalid",
        3: "choices_invalid",
        4: "label_invalid",
        5: "duplicate_id",
        6: "record_invalid",
        7: "record_invalid",
    }


def test_pmc_vqa_row_with_more_cells_than_columns_is_malformed(tmp_path):
    from tests.support.medvqa_fixtures import pmc_vqa

    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=20, n_test=4)
    lines = (src / "train.csv").read_text().splitlines()
    lines[3] += ",an extra cell"  # data row 3
    (src / "train.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    prepare(DataConfig(source="pmc-vqa", input=str(src), train_size=None, test_size=None, max_bad_fraction=1.0), out)
    assert _quarantine(out) == {3: "row_malformed"}


def test_omnimedvqa_entry_that_is_not_an_object_is_malformed(tmp_path):
    from medrl.data.sources import omnimedvqa

    entry = omnimedvqa._row(["not", "an", "object"], 1, "x", "", DataConfig(source="omnimedvqa"))
    missing = omnimedvqa._row({"question": "Q?", "gt_answer": "a"}, 2, "x", "", DataConfig(source="omnimedvqa"))
    one = omnimedvqa._row({"question": "Q?", "gt_answer": "a", "image_path": "i.png", "option_A": "a"}, 3, "x", "",
                          DataConfig(source="omnimedvqa"))  # fmt: skip
    assert (entry.reason, missing.reason, one.reason) == ("row_malformed", "row_malformed", "choices_invalid")


def test_mimic_study_with_ids_that_are_not_numbers(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(root)
    import gzip

    split = root / "mimic-cxr-2.0.0-split.csv.gz"
    text = gzip.decompress(split.read_bytes()).decode() + "d-q,5000000x,1000003y,train\n"
    split.write_bytes(gzip.compress(text.encode()))
    out = tmp_path / "out"
    summary = prepare(DataConfig(source="mimic-cxr", input=str(root), train_size=None, test_size=None,
                                 max_bad_fraction=1.0), out)  # fmt: skip
    assert summary["reasons"]["bad_ids"] == 1


def test_ms_cxr_empty_phrase_and_an_image_found_nowhere(tmp_path):
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(mimic)
    rows = [
        ["d-pa", "Pneumonia", "left lower lobe consolidation", 10, 20, 30, 10, 64, 48],
        ["d-ap", "Edema", "", 0, 0, 32, 24, 64, 48],
        ["d-nowhere", "Pneumothorax", "small right apical pneumothorax", 0, 0, 32, 24, 64, 48],
    ]
    write_csv(tmp_path / "ms-cxr" / "MS_CXR_Local_Alignment_v1.0.0.csv", MS_HEADER, rows)
    out = tmp_path / "out"
    cfg = DataConfig(source="ms-cxr", input=str(tmp_path / "ms-cxr"), images=str(mimic), train_size=None,
                     test_size=None, max_bad_fraction=1.0)  # fmt: skip
    summary = prepare(cfg, out)
    assert summary["reasons"] == {"phrase_empty": 1, "image_not_found": 1}


PIXELS = (np.arange(64 * 48).reshape(48, 64) % 4096).astype(np.uint16)


def _dicom_reason(path) -> str:
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    return err.value.reason


def test_dicom_in_colour_is_not_grayscale(tmp_path):
    write_dicom(tmp_path / "c.dcm", PIXELS, photometric="RGB")
    assert _dicom_reason(tmp_path / "c.dcm") == "dicom_not_grayscale"


def test_dicom_with_several_frames(tmp_path):
    import pydicom

    write_dicom(tmp_path / "m.dcm", PIXELS)
    ds = pydicom.dcmread(tmp_path / "m.dcm")
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    ds.save_as(tmp_path / "m.dcm")
    assert _dicom_reason(tmp_path / "m.dcm") == "dicom_multiframe"


def test_dicom_without_readable_pixels(tmp_path):
    """A compressed transfer syntax (JPEG 2000) whose pixel data no installed decoder reads."""
    import pydicom
    from pydicom.uid import JPEG2000Lossless

    write_dicom(tmp_path / "p.dcm", PIXELS)
    ds = pydicom.dcmread(tmp_path / "p.dcm")
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\xff\x4f\xff\x51 not a codestream"])
    ds.save_as(tmp_path / "p.dcm", enforce_file_format=True)
    assert _dicom_reason(tmp_path / "p.dcm") == "dicom_pixels_unreadable"


def test_dicom_whose_data_set_cannot_be_parsed(tmp_path):
    """A valid Part 10 header (preamble, DICM, file meta) announcing a deflated data set that is not deflate data."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    write_dicom(tmp_path / "u.dcm", PIXELS)
    meta = pydicom.dcmread(tmp_path / "u.dcm").file_meta
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    write_file_meta_info(header, meta, enforce_standard=True)
    (tmp_path / "u.dcm").write_bytes(b"\0" * 128 + b"DICM" + header.getvalue() + b"not deflate data " * 20)
    with pytest.raises(DicomError) as err:
        read_dicom(tmp_path / "u.dcm")
    assert err.value.reason == "dicom_unparsable"
