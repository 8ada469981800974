"""Chest X-ray sources, each on a fixture in its exact layout (MIMIC-CXR-JPG, MS-CXR, VinDr-CXR with DICOM files
written by pydicom), the DICOM conversion (windowing, MONOCHROME1, non-DICOM rejected, no tag leaks) and the
synthetic source (boxes where the findings are drawn, reports whose labels are the known ones)."""

import csv
import gzip
import io
import json
import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

from medrl.config import DataConfig
from medrl.data.cxr.dicom import DicomError, dicom_to_png, read_dicom
from medrl.data.cxr.mimic_cxr import report_sections
from medrl.data.cxr.vindr_cxr import fuse_boxes
from medrl.data.prep import prepare
from medrl.data.prompt import format_boxes
from medrl.data.records import read_records
from medrl.data.sources import PrepError
from medrl.rewards.grounding import grounding_reward
from medrl.rewards.report_quality import extract_labels

# ------------------------------------------------------------------------------------------------ helpers

IDENTIFYING = {"PatientName": "DOE^JANE", "PatientID": "PID-998877", "StudyDate": "20190304",
               "InstitutionName": "SAINT EXAMPLE HOSPITAL", "AccessionNumber": "ACC-5544"}  # fmt: skip


def write_csv(path, header, rows, gz=False):
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)


def write_dicom(path, pixels, photometric="MONOCHROME2", window=None, rescale=None, voi_lut=None):
    """A real DICOM file (Part 10, explicit VR little endian) with identifying tags, written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for tag, value in IDENTIFYING.items():
        setattr(ds, tag, value)
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if rescale:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if voi_lut is not None:
        item = Dataset()
        item.LUTDescriptor = [len(voi_lut), 0, 12]
        item.add_new(0x00283006, "US", [int(v) for v in voi_lut])  # LUT Data
        ds.VOILUTSequence = [item]
    ds.PixelData = pixels.astype("<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def every_output_text(folder):
    """Every byte prep wrote, as text (PNG bytes included), to search for leaked tag values."""
    return "\n".join(p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------------ DICOM

RAMP = np.tile(np.linspace(0, 4000, 64), (32, 1)).astype(np.uint16)  # 12-bit values, left dark, right bright


def test_window_maps_below_to_black_above_to_white(tmp_path):
    arr = read_dicom(write_dicom(tmp_path / "w.dcm", RAMP, window=(2000, 1000)))
    assert arr[0, 0] == 0.0 and arr[0, -1] == 1.0  # outside the window: clipped
    column = np.argmin(np.abs(RAMP[0].astype(float) - 2000))
    assert abs(arr[0, column] - 0.5) < 0.05  # the center is mid-gray
    assert ((arr > 0) & (arr < 1)).mean() < 0.35  # only the window's quarter of the range keeps gradations


def test_without_window_the_full_range_is_used_and_rescale_applies(tmp_path):
    arr = read_dicom(write_dicom(tmp_path / "r.dcm", RAMP, rescale=(2, -1000)))
    assert arr.min() == 0.0 and arr.max() == 1.0
    assert np.all(np.diff(arr[0]) >= 0)


def test_voi_lut_sequence_is_applied(tmp_path):
    lut = np.where(np.arange(4096) < 2048, 0, 4095)  # a step: dark below 2048, white above
    arr = read_dicom(write_dicom(tmp_path / "l.dcm", RAMP, voi_lut=lut))
    assert set(np.unique(arr)) == {0.0, 1.0}
    assert arr[0, 0] == 0.0 and arr[0, -1] == 1.0


def test_monochrome1_is_inverted(tmp_path):
    mono2 = read_dicom(write_dicom(tmp_path / "m2.dcm", RAMP, window=(2000, 4000)))
    mono1 = read_dicom(write_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1", window=(2000, 4000)))
    assert np.allclose(mono1, 1.0 - mono2)
    assert mono1[0, 0] > mono1[0, -1]  # high stored values are dark in MONOCHROME1


@pytest.mark.parametrize(
    "content",
    [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 200, b"\0" * 128 + b"DIXM" + b"\0" * 64, b""],
)
def test_a_file_that_is_not_dicom_is_rejected(tmp_path, content):
    path = tmp_path / "fake.dicom"
    path.write_bytes(content)
    with pytest.raises(DicomError) as err:
        read_dicom(path)
    assert err.value.reason == "not_dicom"


def test_dicom_without_part10_header_is_rejected(tmp_path):
    """A bare dataset (no preamble, no DICM): only force=True would read it, and medrl never forces."""
    path = write_dicom(tmp_path / "ok.dcm", RAMP)
    raw = path.read_bytes()
    bare = tmp_path / "bare.dcm"
    bare.write_bytes(raw[132:])  # drop the preamble and the DICM prefix
    with pytest.raises(DicomError, match="not_dicom"):
        read_dicom(bare)


def test_png_holds_pixels_only(tmp_path):
    src = write_dicom(tmp_path / "a.dcm", RAMP, window=(2000, 4000))
    width, height = dicom_to_png(src, tmp_path / "a.png")
    assert (width, height) == (64, 32)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "L" and im.format == "PNG"
        assert not {k: v for k, v in im.info.items() if k not in ("dpi", "gamma")}  # no text chunks
    text = (tmp_path / "a.png").read_bytes().decode("latin-1")
    assert not any(value in text for value in IDENTIFYING.values())


# ------------------------------------------------------------------------------------------------ VinDr-CXR

VINDR_HEADER = ["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]


def vindr_fixture(root):
    """Three radiologists on img1 (two agree on an effusion, one sees a nodule too), a "No finding" image,
    a MONOCHROME1 image, and a .dicom file that is really a PNG."""
    image = np.full((100, 200), 1000, np.uint16)
    image[10:40, 20:60] = 3000
    write_dicom(root / "train" / "img1.dicom", image, window=(2000, 4000))
    write_dicom(root / "train" / "img2.dicom", image)
    write_dicom(root / "train" / "img3.dicom", image, "MONOCHROME1", window=(2000, 4000))
    Image.new("L", (8, 8)).save(root / "train" / "img4.dicom", format="PNG")
    scan = np.full((100, 200), 1000, np.uint16)  # another patient's scan: the leak check keeps it in the test split
    scan[50:90, 100:180] = 3000
    write_dicom(root / "test" / "t1.dicom", scan, window=(2000, 4000))
    rows = [
        ["img1", "R8", "Pleural effusion", 20, 10, 60, 40],
        ["img1", "R9", "Pleural effusion", 22, 10, 62, 40],
        ["img1", "R10", "No finding", "", "", "", ""],
        ["img1", "R9", "Nodule/Mass", 150, 70, 170, 90],
        ["img2", "R8", "No finding", "", "", "", ""],
        ["img2", "R9", "No finding", "", "", "", ""],
        ["img3", "R8", "Aortic enlargement", 90, 20, 110, 60],
        ["img4", "R8", "Cardiomegaly", 50, 50, 150, 90],
    ]
    write_csv(root / "annotations" / "annotations_train.csv", VINDR_HEADER, rows)
    write_csv(root / "annotations" / "annotations_test.csv", VINDR_HEADER, [["t1", "", "Nodule/Mass", 0, 0, 100, 50]])


def test_vindr_loader(tmp_path, caplog):
    root = tmp_path / "vindr"
    vindr_fixture(root)
    out = tmp_path / "prepared"
    with caplog.at_level(logging.DEBUG):
        summary = prepare(
            DataConfig(source="vindr-cxr", input=str(root), train_size=None, test_size=None, max_bad_fraction=0.5),
            out,
        )
    assert summary["reasons"] == {"not_dicom": 1}  # img4; img2 ("No finding" only) gives no record
    train = {r.id: r for r in read_records(out, "train")}
    assert set(train) == {"vindr-img1-nodule-mass", "vindr-img1-pleural-effusion", "vindr-img3-aortic-enlargement"}
    effusion = train["vindr-img1-pleural-effusion"]
    assert effusion.task == "grounding" and effusion.meta["radiologists"] == 2
    assert effusion.boxes == [[0.105, 0.1, 0.305, 0.4]]  # two radiologists fused: mean box / (200, 100)
    assert effusion.answer == format_boxes(effusion.boxes) == "[0.10, 0.10, 0.30, 0.40]"  # 2 decimals
    assert "pleural effusion" in effusion.question
    assert grounding_reward([effusion.answer], boxes=[effusion.boxes], task=["grounding"])[0] > 0.9
    [test] = read_records(out, "test")
    assert test.boxes == [[0.0, 0.0, 0.5, 0.5]] and test.split == "test"
    # converted once to 8-bit PNG: the bright square is white, the MONOCHROME1 copy dark
    with Image.open(out / effusion.image) as im:
        assert im.format == "PNG" and im.mode == "L" and im.size == (200, 100)
        assert im.getpixel((30, 20)) > 150 > im.getpixel((150, 80))
    with Image.open(out / train["vindr-img3-aortic-enlargement"].image) as im:
        assert im.getpixel((30, 20)) < 100 < im.getpixel((150, 80))
    # no DICOM tag anywhere: records, quarantine, summary, PNGs, logs
    leaked = every_output_text(out) + caplog.text
    assert not [v for v in IDENTIFYING.values() if v in leaked]


def test_fuse_boxes_keeps_one_box_per_radiologist_per_finding():
    marks = [("R1", (0, 0, 10, 10)), ("R1", (1, 0, 11, 10)), ("R2", (0, 0, 10, 10))]
    assert fuse_boxes(marks) == [(0.0, 0.0, 10.0, 10.0), (1.0, 0.0, 11.0, 10.0)]


def test_vindr_without_annotations_names_the_layout(tmp_path):
    with pytest.raises(PrepError, match=r"annotations_train\.csv"):
        prepare(DataConfig(source="vindr-cxr", input=str(tmp_path)), tmp_path / "out")


# ------------------------------------------------------------------------------------------------ MIMIC-CXR-JPG

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with cough

 FINDINGS:
 Mild cardiomegaly.  No pleural effusion or pneumothorax.
 Possible left basilar consolidation.

 IMPRESSION:
 Possible left lower lobe pneumonia.
"""


def mimic_fixture(root):
    split_rows = [
        ["d-lat", "50000001", "10000032", "train"],
        ["d-pa", "50000001", "10000032", "train"],
        ["d-ap", "50000002", "10000033", "test"],
        ["d-x", "50000003", "11000034", "validate"],  # no report file
        ["d-y", "50000004", "12000035", "train"],  # a report without findings or impression
    ]
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"], split_rows, True)
    write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate"],
        [
            ["d-lat", "10000032", "50000001", "LATERAL", "21800506"],
            ["d-pa", "10000032", "50000001", "PA", "21800506"],
            ["d-ap", "10000033", "50000002", "AP", "21800507"],
        ],
        True,
    )
    chexpert = ["subject_id", "study_id", "Cardiomegaly", "Pleural Effusion", "Pneumonia", "Consolidation"]
    write_csv(root / "mimic-cxr-2.0.0-chexpert.csv.gz", chexpert, [["10000032", "50000001", "1.0", "0.0", "-1.0", ""]],
              True)  # fmt: skip
    for subject, study, dicoms in [("10000032", "50000001", ["d-lat", "d-pa"]), ("10000033", "50000002", ["d-ap"]),
                                   ("11000034", "50000003", ["d-x"]), ("12000035", "50000004", ["d-y"])]:  # fmt: skip
        folder = root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        folder.mkdir(parents=True)
        for d in dicoms:
            scan = Image.new("L", (64, 48), 90)  # each its own scan (a blob in its own place): no copy leaks
            k = ["d-lat", "d-pa", "d-ap", "d-x", "d-y"].index(d)
            ImageDraw.Draw(scan).ellipse((6 + 8 * k, 4 + 6 * k, 22 + 8 * k, 18 + 6 * k), fill=220)
            scan.save(folder / f"{d}.jpg", format="JPEG")
    (root / "files/p10/p10000032/s50000001.txt").write_text(REPORT)
    (root / "files/p10/p10000033/s50000002.txt").write_text("FINDINGS: Lungs are clear.\nIMPRESSION: Normal chest.")
    (root / "files/p12/p12000035/s50000004.txt").write_text("WET READ: ___ no acute process")


def test_mimic_loader(tmp_path):
    root = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(root)
    out = tmp_path / "prepared"
    summary = prepare(
        DataConfig(source="mimic-cxr", input=str(root), train_size=None, test_size=None, max_bad_fraction=0.5), out
    )
    assert summary["reasons"] == {"report_missing": 1, "report_sections_missing": 1}
    [train] = read_records(out, "train")
    [test] = read_records(out, "test")
    assert train.task == "report" and test.split == "test"
    assert train.image == "images/files/p10/p10000032/s50000001/d-pa.jpg"  # the frontal view, copied
    assert (out / train.image).is_file()
    assert (
        train.report
        == train.answer
        == (
            "Findings: Mild cardiomegaly. No pleural effusion or pneumothorax. Possible left basilar consolidation. "
            "Impression: Possible left lower lobe pneumonia."
        )
    )
    assert train.meta["chexpert"] == {"Cardiomegaly": 1, "Pneumonia": -1, "Pleural Effusion": 0}  # blank: absent
    assert extract_labels(train.report) == {
        "Cardiomegaly": 1, "Consolidation": -1, "Pneumonia": -1, "Pneumothorax": 0, "Pleural Effusion": 0,
    }  # fmt: skip
    assert "21800506" not in every_output_text(out)  # metadata dates are not carried


def test_report_sections():
    sections = report_sections(REPORT)
    assert sections["FINDINGS"].startswith("Mild cardiomegaly.") and sections["IMPRESSION"].endswith("pneumonia.")
    assert sections["INDICATION"] == "___F with cough"


def test_mimic_needs_its_split_csv(tmp_path):
    with pytest.raises(PrepError, match=r"mimic-cxr-2\.0\.0-split\.csv"):
        prepare(DataConfig(source="mimic-cxr", input=str(tmp_path)), tmp_path / "out")


# ------------------------------------------------------------------------------------------------ MS-CXR

MS_HEADER = ["dicom_id", "category_name", "label_text", "x", "y", "w", "h", "image_width", "image_height"]


def test_ms_cxr_loader_finds_images_through_mimic_metadata(tmp_path):
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(mimic)
    ms = tmp_path / "ms-cxr"
    rows = [
        ["d-pa", "Pneumonia", "left lower lobe consolidation", 10, 20, 30, 10, 64, 48],
        ["d-pa", "Pneumonia", "left lower lobe consolidation", 40, 0, 16, 24, 64, 48],
        ["d-ap", "Pneumothorax", "small right apical pneumothorax", 0, 0, 32, 24, 64, 48],
        ["d-ap", "Edema", "bad box", 0, 0, 0, 24, 64, 48],
        ["d-ap", "Edema", "not numbers", "a", 0, 3, 24, 64, 48],
    ]
    write_csv(ms / "MS_CXR_Local_Alignment_v1.0.0.csv", MS_HEADER, rows)
    out = tmp_path / "prepared"
    cfg = DataConfig(source="ms-cxr", input=str(ms), images=str(mimic), train_size=None, test_size=None,
                     max_bad_fraction=0.5)  # fmt: skip
    summary = prepare(cfg, out)
    assert summary["reasons"] == {"box_invalid": 1, "box_not_numeric": 1}
    records = {r.meta["phrase"]: r for split in ("train", "test") for r in read_records(out, split)}
    consolidation = records["left lower lobe consolidation"]
    assert consolidation.task == "grounding"
    expected = [[10 / 64, 20 / 48, 40 / 64, 30 / 48], [40 / 64, 0.0, 56 / 64, 0.5]]
    assert np.allclose(consolidation.boxes, expected, atol=1e-6)
    assert consolidation.image == "images/files/p10/p10000032/s50000001/d-pa.jpg"
    assert (out / consolidation.image).is_file()
    assert records["small right apical pneumothorax"].boxes == [[0.0, 0.0, 0.5, 0.5]]


def test_ms_cxr_path_and_split_columns_are_used(tmp_path):
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(mimic)
    csv_path = tmp_path / "ms.csv"
    write_csv(
        csv_path,
        [*MS_HEADER, "path", "split"],
        [
            [
                "d-ap",
                "Pneumothorax",
                "right pneumothorax",
                0,
                0,
                32,
                24,
                64,
                48,
                "files/p10/p10000033/s50000002/d-ap.jpg",
                "test",
            ]
        ],
    )
    out = tmp_path / "prepared"
    prepare(DataConfig(source="ms-cxr", input=str(csv_path), images=str(mimic)), out)
    [rec] = read_records(out, "test")
    assert rec.image == "images/files/p10/p10000033/s50000002/d-ap.jpg"


# ------------------------------------------------------------------------------------------------ synthetic

OBSERVATION_OF_KIND = {"Lung Lesion", "Consolidation", "Pleural Effusion", "Pneumothorax", "Cardiomegaly"}


def test_cxr_synthetic(tmp_path):
    out = tmp_path / "syn"
    summary = prepare(DataConfig(source="cxr-synthetic", train_size=60, test_size=20, image_size=112, seed=3), out)
    assert summary["quarantined"] == 0 and (summary["train"], summary["test"]) == (60, 20)
    records = read_records(out, "train") + read_records(out, "test")
    reports = [r for r in records if r.task == "report"]
    groundings = [r for r in records if r.task == "grounding"]
    assert reports and groundings
    for rec in reports:
        known = rec.meta["labels"]
        extracted = {k: v for k, v in extract_labels(rec.report).items() if v == 1 and k != "No Finding"}
        assert extracted == known, rec.report  # reports are written from the labels the extractor reads back
        assert ("No Finding" in extract_labels(rec.report)) == (not known)
    for rec in groundings:
        assert set(rec.meta["labels"]) <= OBSERVATION_OF_KIND
        [box] = rec.boxes
        assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1
        assert grounding_reward([rec.answer], boxes=[rec.boxes], task=["grounding"]) == [1.0]
        # the finding is drawn inside its box: it differs from the lung field around it
        with Image.open(out / rec.image) as im:
            gray = np.asarray(im.convert("L"), dtype=float)
        size = gray.shape[0]
        x1, y1, x2, y2 = (round(v * (size - 1)) for v in box)
        inside = gray[y1 + 2 : y2 - 1, x1 + 2 : x2 - 1].mean()
        kind = rec.meta["phrase"]
        if "pneumothorax" in kind:
            assert inside < 20
        else:
            assert inside > 100, kind
    again = tmp_path / "again"
    prepare(DataConfig(source="cxr-synthetic", train_size=60, test_size=20, image_size=112, seed=3), again)
    assert (again / "train.jsonl").read_text() == (out / "train.jsonl").read_text()


def test_box_scale_sets_the_grounding_question_target_and_reward(tmp_path):
    config = dict(source="cxr-synthetic", train_size=20, test_size=4, cxr_tasks=["grounding"], seed=1)
    prepare(DataConfig(**config), tmp_path / "one")
    prepare(DataConfig(**config, box_scale=1000), tmp_path / "thousand")
    one, thousand = read_records(tmp_path / "one", "train"), read_records(tmp_path / "thousand", "train")
    assert [r.boxes for r in one] == [r.boxes for r in thousand]  # records keep boxes in 0..1 either way
    for a, b in zip(one, thousand, strict=True):
        assert "between 0 and 1." in a.question and a.meta["box_scale"] == 1
        assert "between 0 and 1000." in b.question and b.meta["box_scale"] == 1000
        assert b.answer == format_boxes(b.boxes, 1000)
        assert b.answer == " ".join(f"[{', '.join(str(round(v * 1000)) for v in box)}]" for box in b.boxes)
        assert grounding_reward([b.answer], boxes=[b.boxes], task=["grounding"], box_scale=[1000]) == [1.0]
        assert grounding_reward([a.answer], boxes=[a.boxes], task=["grounding"], box_scale=[1]) == [1.0]


def test_cxr_tasks_select_records(tmp_path):
    prepare(DataConfig(source="cxr-synthetic", train_size=30, test_size=5, cxr_tasks=["grounding"]), tmp_path / "g")
    assert {r.task for r in read_records(tmp_path / "g", "train")} == {"grounding"}
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["train"] == 30
    with pytest.raises(PrepError, match="cxr_tasks"):
        prepare(DataConfig(source="mimic-cxr", input=str(tmp_path), cxr_tasks=["grounding"]), tmp_path / "m")


def test_cli_prep_writes_cxr_records(tmp_path):
    from typer.testing import CliRunner

    from medrl.cli import app

    out = tmp_path / "cli"
    args = ["prep", "--source", "cxr-synthetic", "--out", str(out), "--train-size", "8", "--test-size", "2"]
    done = CliRunner().invoke(app, [*args, "--cxr-tasks", "report"])
    assert done.exit_code == 0, done.output
    assert {r.task for r in read_records(out, "train")} == {"report"}
    bad = CliRunner().invoke(app, [*args, "--cxr-tasks", "captions"])
    assert bad.exit_code != 0


@pytest.mark.parametrize(
    ("source", "folder", "task", "other"),
    [
        ("mimic-cxr", "the MIMIC-CXR-JPG folder", "report", "grounding"),
        ("vindr-cxr", "the VinDr-CXR folder", "grounding", "report"),
        ("ms-cxr", "the MS-CXR folder or its CSV", "grounding", "report"),
    ],
)
def test_cxr_sources_name_the_input_and_the_task_they_need(tmp_path, source, folder, task, other):
    with pytest.raises(PrepError, match=f"data.source={source} needs data.input: {folder}"):
        prepare(DataConfig(source=source), tmp_path / "a")
    with pytest.raises(PrepError, match=f"data.cxr_tasks: {source} writes {task} records only; include '{task}'"):
        prepare(DataConfig(source=source, input=str(tmp_path), cxr_tasks=[other]), tmp_path / "b")


def test_a_csv_without_the_expected_columns_is_named(tmp_path):
    csv_path = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    csv_path.write_text(" dicom_id , label_text ,x,y\nd1,Pneumonia,1,2\n")  # spaces around names are not a fault
    missing = r"MS_CXR_Local_Alignment_v1\.0\.0\.csv: columns w, h, image_width, image_height are missing"
    with pytest.raises(PrepError, match=missing):
        prepare(DataConfig(source="ms-cxr", input=str(csv_path)), tmp_path / "out")


# ------------------------------------------------------------------------------------------------ malformed rows
# A row with more cells than its header (an unquoted comma in a value) shifts every cell after the comma. The chest
# X-ray sources build one record from several rows, so the record such a row belongs to is quarantined whole
# (row_malformed, as the VQA sources quarantine such a row): kept, it would miss a box or carry another value.


def test_vindr_quarantines_the_image_of_a_row_with_more_cells_than_the_header(tmp_path):
    root = tmp_path / "vindr"
    vindr_fixture(root)
    path = root / "annotations" / "annotations_train.csv"
    text = path.read_text().replace("img1,R9,Nodule/Mass,150", "img1,R9,Nodule/Mass,left,150")
    path.write_text(text)
    out = tmp_path / "prepared"
    summary = prepare(
        DataConfig(source="vindr-cxr", input=str(root), train_size=None, test_size=None, max_bad_fraction=0.5), out
    )
    assert summary["reasons"] == {"not_dicom": 1, "row_malformed": 1}
    assert {r.id for r in read_records(out, "train")} == {"vindr-img3-aortic-enlargement"}  # img1's records left out
    assert "Nodule" not in (out / "quarantine.jsonl").read_text()


@pytest.mark.parametrize("cells", ["one too many", "the last missing"])
@pytest.mark.parametrize("name", ["split", "metadata", "chexpert"])
def test_mimic_quarantines_the_study_of_a_malformed_split_metadata_or_label_row(tmp_path, name, cells):
    """Study 50000001 (train) has one row with a cell too many, or its last cell missing (the split row's is the
    split: read as empty, the study would have gone to train unnoticed), in one of its three CSV files."""
    root = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(root)
    path = root / f"mimic-cxr-2.0.0-{name}.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    row = next(i for i, line in enumerate(lines) if "50000001" in line)
    lines[row] = lines[row] + ",1.0" if cells == "one too many" else lines[row].rsplit(",", 1)[0]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    out = tmp_path / "prepared"
    cfg = DataConfig(source="mimic-cxr", input=str(root), train_size=None, test_size=None, max_bad_fraction=0.8)
    summary = prepare(cfg, out)
    assert summary["reasons"] == {"report_missing": 1, "report_sections_missing": 1, "row_malformed": 1}
    assert read_records(out, "train") == [] and len(read_records(out, "test")) == 1


def test_ms_cxr_quarantines_every_phrase_of_the_image_of_a_malformed_row(tmp_path):
    """The comma in "left, lower lobe" cuts the phrase: which phrase the box belongs to is unknown."""
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(mimic)
    ms = tmp_path / "ms-cxr"
    rows = [
        ["d-pa", "Pneumonia", "left lower lobe consolidation", 10, 20, 30, 10, 64, 48],
        ["d-pa", "Pneumonia", "left", "lower lobe consolidation", 40, 0, 16, 24, 64, 48],
        ["d-ap", "Pneumothorax", "small right apical pneumothorax", 0, 0, 32, 24, 64, 48],
    ]
    write_csv(ms / "MS_CXR_Local_Alignment_v1.0.0.csv", MS_HEADER, rows)
    out = tmp_path / "prepared"
    cfg = DataConfig(source="ms-cxr", input=str(ms), images=str(mimic), train_size=None, test_size=None,
                     max_bad_fraction=0.8)  # fmt: skip
    summary = prepare(cfg, out)
    assert summary["reasons"] == {"row_malformed": 2}  # the two phrase groups of d-pa
    records = [r for split in ("train", "test") for r in read_records(out, split)]
    assert [r.meta["phrase"] for r in records] == ["small right apical pneumothorax"]


def test_ms_cxr_quarantines_a_phrase_whose_image_has_a_malformed_metadata_row(tmp_path):
    mimic = tmp_path / "mimic-cxr-jpg"
    mimic_fixture(mimic)
    path = mimic / "mimic-cxr-2.0.0-metadata.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines = [line + ",AP" if line.startswith("d-pa,") else line for line in lines]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    ms = tmp_path / "ms-cxr"
    rows = [
        ["d-pa", "Pneumonia", "left lower lobe consolidation", 10, 20, 30, 10, 64, 48],
        ["d-ap", "Pneumothorax", "small right apical pneumothorax", 0, 0, 32, 24, 64, 48],
    ]
    write_csv(ms / "MS_CXR_Local_Alignment_v1.0.0.csv", MS_HEADER, rows)
    out = tmp_path / "prepared"
    cfg = DataConfig(source="ms-cxr", input=str(ms), images=str(mimic), train_size=None, test_size=None,
                     max_bad_fraction=0.8)  # fmt: skip
    assert prepare(cfg, out)["reasons"] == {"row_malformed": 1}
    records = [r for split in ("train", "test") for r in read_records(out, split)]
    assert [r.meta["phrase"] for r in records] == ["small right apical pneumothorax"]
