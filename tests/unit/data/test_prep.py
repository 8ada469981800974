"""Prep: the prepared-dataset layout, subsets, and every kind of bad input quarantined with a reason code."""

import csv
import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile
from pydantic import ValidationError

from medrl.config import DataConfig
from medrl.data import prep as prep_module
from medrl.data.images import check_image
from medrl.data.prep import SOURCES, PrepError, Row, check_record, prepare
from medrl.data.records import Record, read_records
from tests.support.cli import medrl_here
from tests.support.medvqa_fixtures import image_bytes, pmc_rows, pmc_vqa, slake, write_csv


def test_synthetic_layout(synthetic_data):
    names = {p.name for p in synthetic_data.iterdir()}
    assert {"train.jsonl", "test.jsonl", "images", "quarantine.jsonl", "summary.json"} <= names
    assert not [n for n in names if n.startswith(".")]  # no scratch left behind
    train, test = read_records(synthetic_data, "train"), read_records(synthetic_data, "test")
    assert (len(train), len(test)) == (64, 16)
    for rec in train[:8]:
        assert rec.answer in rec.choices and len(rec.choices) == 4
        assert "ABCD"[rec.choices.index(rec.answer)] == rec.answer_label
        assert (synthetic_data / rec.image).is_file() and rec.meta["answer_type"] == "closed"
    summary = json.loads((synthetic_data / "summary.json").read_text())
    assert summary["rows"] == 80 and (summary["train"], summary["test"], summary["quarantined"]) == (64, 16, 0)
    assert summary["outcomes"] == {"kept": 80, "unselected": 0, "duplicate": 0, "leak": 0, "filtered": 0, "bad": 0}
    assert summary["answer_types"] == {"train": {"closed": 64, "open": 0}, "test": {"closed": 16, "open": 0}}


def test_synthetic_answers_are_balanced_and_deterministic(tmp_path):
    a = prepare(DataConfig(train_size=200, test_size=8, seed=5), tmp_path / "a")
    b = prepare(DataConfig(train_size=200, test_size=8, seed=5), tmp_path / "b")
    assert a == b
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()
    answers = [r.answer for r in read_records(tmp_path / "a", "train")]
    assert all(answers.count(q) > 30 for q in set(answers)) and len(set(answers)) == 4


@pytest.mark.parametrize("brightness", [[200, 255], [130, 170]])
def test_synthetic_count_images_show_the_answer(tmp_path, brightness):
    # The count task's answer is in the pixels: blobs brighter than the tissue (grey 60-100), counted.
    from scipy import ndimage

    cfg = DataConfig(train_size=48, test_size=8, synthetic_task="count", lesion_brightness=brightness)
    prepare(cfg, tmp_path)
    records = read_records(tmp_path, "train")
    assert {r.answer for r in records} == {"one", "two", "three", "four"}
    for rec in records:
        assert sorted(rec.choices) == ["four", "one", "three", "two"] and rec.question.count("lesion") == 1
        grey = np.asarray(Image.open(tmp_path / rec.image).convert("L"))
        assert grey.max() <= brightness[1]  # no lesion brighter than asked (blur only lowers peaks)
        _, blobs = ndimage.label(grey > (brightness[0] + 100) // 2)
        assert ["one", "two", "three", "four"][blobs - 1] == rec.answer, rec.id


def test_synthetic_task_and_brightness_are_checked():
    with pytest.raises(ValueError, match="synthetic_task"):
        DataConfig(synthetic_task="size")
    with pytest.raises(ValueError, match=r"lesion_brightness \[190, 150\]"):
        DataConfig(lesion_brightness=[190, 150])


# ------------------------------------------------------------------------------------------ bad images


def png_bomb(side: int) -> bytes:
    """A valid 1-bit greyscale PNG of side x side black pixels: a few KB on disk, side² bytes once decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def truncated_jpeg() -> bytes:
    data = image_bytes(1, "JPEG", size=(120, 90))
    return data[: len(data) * 2 // 3]


def truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 40).save(buf, "PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


@pytest.fixture
def images(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "img.png").write_bytes(image_bytes(0, "PNG"))
    (root / "empty.png").write_bytes(b"")
    (root / "text.png").write_text("not an image")
    (root / "anim.gif").write_bytes(image_bytes(0, "GIF"))
    (root / "cut.jpg").write_bytes(truncated_jpeg())
    (root / "cut.png").write_bytes(truncated_png())
    (root / "bomb.png").write_bytes(png_bomb(12_000))
    (tmp_path / "secret.png").write_bytes(image_bytes(0, "PNG"))
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    return root


def _record(**kw):
    base = {
        "id": "r",
        "image": "img.png",
        "question": "Which?",
        "choices": ["a", "b"],
        "answer": "b",
        "answer_label": "B",
    }
    return Record(**{**base, **kw})


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, None),
        ({"question": "   "}, "question_empty"),
        ({"question": "Which \udcff organ?"}, "question_not_utf8"),  # a byte that was not UTF-8
        ({"question": "Which\x00?"}, "question_not_utf8"),
        ({"answer": "b\udce9", "choices": ["a", "b\udce9"]}, "text_not_utf8"),
        ({"answer": " "}, "answer_empty"),
        ({"choices": ["b", "B "], "answer": "b", "answer_label": "A"}, "choices_invalid"),
        ({"answer": "c"}, "answer_not_in_choices"),
        ({"answer_label": "A"}, "label_mismatch"),
        ({"image": None}, "image_missing"),
        ({"image": "../outside.png"}, "image_path_outside_root"),
        ({"image": "sub/../../outside.png"}, "image_path_outside_root"),
        ({"image": "/etc/passwd"}, "image_path_outside_root"),
        ({"image": "link.png"}, "image_path_outside_root"),  # a symlink out of the dataset
        ({"image": "missing.png"}, "image_missing"),
        ({"image": "empty.png"}, "image_empty"),
        ({"image": "text.png"}, "image_unreadable"),
        ({"image": "anim.gif"}, "image_format_not_allowed"),
        ({"image": "cut.jpg"}, "image_truncated"),
        ({"image": "cut.png"}, "image_truncated"),
        ({"image": "bomb.png"}, "image_too_large"),
        ({"image": ["img.png", "cut.jpg"]}, "image_truncated"),
    ],
)
def test_check_record(images, change, reason):
    assert check_record(_record(**change), images) == reason


def test_decompression_bomb_is_rejected_from_its_header_without_decoding(tmp_path, monkeypatch):
    """A 12,000² PNG (2 KB on disk, 144 MB decoded; under Pillow's own 179 MP limit) and a 20,000² one (over it)."""
    (tmp_path / "bomb.png").write_bytes(png_bomb(12_000))
    (tmp_path / "huge.png").write_bytes(png_bomb(20_000))
    (tmp_path / "fine.png").write_bytes(image_bytes(0, "PNG"))
    assert (tmp_path / "bomb.png").stat().st_size < 20_000
    decoded = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    assert check_image(tmp_path, "bomb.png") == "image_too_large"
    assert check_image(tmp_path, "huge.png") == "image_too_large"
    assert decoded == []
    assert check_image(tmp_path, "fine.png") is None and decoded == [(64, 48)]  # the spy does see decodes


# ----------------------------------------------------------------------------- bad rows in a real layout


def _bad_pmc(tmp_path):
    """PMC-VQA with one row of each kind of badness, in train.csv; returns (source folder, rows, bad row numbers)."""
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=40, n_test=6)
    rows = pmc_rows(40, seed=1)
    img = src / "images"
    rows[2]["Figure_path"] = "../train.csv"
    rows[3]["Figure_path"] = "/etc/hostname"
    (img / "escape.jpg").symlink_to(tmp_path / "outside.jpg")
    (tmp_path / "outside.jpg").write_bytes(image_bytes(9))
    rows[4]["Figure_path"] = "escape.jpg"
    rows[5]["Figure_path"] = "gone.jpg"
    (img / "empty.jpg").write_bytes(b"")
    rows[6]["Figure_path"] = "empty.jpg"
    (img / "cut.jpg").write_bytes(truncated_jpeg())
    rows[7]["Figure_path"] = "cut.jpg"
    (img / "bomb.png").write_bytes(png_bomb(12_000))
    rows[8]["Figure_path"] = "bomb.png"
    (img / "scan.gif").write_bytes(image_bytes(3, "GIF"))
    rows[9]["Figure_path"] = "scan.gif"
    rows[10]["Question"] = "BAD-BYTES"
    rows[11]["Question"] = "  "
    rows[12]["Answer"] = "Not an option"
    rows[13]["Answer_label"] = "ABCD"[("ABCD".index(rows[13]["Answer_label"]) + 2) % 4]
    rows[14] = {**rows[15], "options": rows[15]["options"]}  # same figure and question as the next row
    write_csv(src / "train.csv", rows)
    raw = (src / "train.csv").read_bytes().replace(b"BAD-BYTES", b"Which \xff\xfe organ?")
    (src / "train.csv").write_bytes(raw)
    reasons = {
        3: "image_path_outside_root",
        4: "image_path_outside_root",
        5: "image_path_outside_root",
        6: "image_missing",
        7: "image_empty",
        8: "image_truncated",
        9: "image_too_large",
        10: "image_format_not_allowed",
        11: "question_not_utf8",
        12: "question_empty",
        13: "answer_not_in_choices",
        14: "label_mismatch",
        16: "duplicate",  # the first of the pair (row 15) is kept
    }
    return src, rows, reasons


def test_each_bad_row_is_quarantined_with_its_reason_and_row_number(tmp_path):
    src, rows, reasons = _bad_pmc(tmp_path)
    out = tmp_path / "out"
    summary = prepare(
        DataConfig(source="pmc-vqa", input=str(src), train_size=None, test_size=None, max_bad_fraction=0.5), out
    )
    lines = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert lines == [{"file": "train.csv", "source_row": n, "reason": r} for n, r in sorted(reasons.items())]
    assert summary["reasons"]["image_path_outside_root"] == 3 and summary["quarantined"] == len(reasons)
    assert summary["outcomes"] == {
        "kept": 46 - len(reasons),
        "unselected": 0,
        "duplicate": 1,
        "leak": 0,
        "filtered": 0,
        "bad": len(reasons) - 1,
    }
    assert summary["bad_fraction"] == round((len(reasons) - 1) / 46, 6)
    # nothing of a row's content leaves in the quarantine or the summary
    written = (out / "quarantine.jsonl").read_text() + (out / "summary.json").read_text()
    for row in rows[2:16]:
        for content in (row["Question"].strip(), row["Figure_path"], row["Answer"]):
            assert not content or content not in written
    assert not (out / "images" / "bomb.png").exists() and not (out / "images" / "escape.jpg").exists()


def test_above_max_bad_fraction_the_cli_fails_naming_reasons_and_writes_nothing(tmp_path):
    src, _, _ = _bad_pmc(tmp_path)
    out = tmp_path / "data"
    run = ["prep", "--source", "pmc-vqa", "--input", str(src), "--out", str(out)]
    failed = medrl_here(*run)
    assert failed.returncode == 2, failed.stderr
    assert "12 of 46 rows of source 'pmc-vqa' are bad" in failed.stderr
    assert "image_path_outside_root (3; e.g. train.csv row 3, train.csv row 4, train.csv row 5)" in failed.stderr
    assert "--max-bad-fraction" in failed.stderr and "Traceback" not in failed.stderr
    assert not out.exists() and list(tmp_path.glob(".staging-*")) == []

    done = medrl_here(*run, "--max-bad-fraction", "0.3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"] == 40 - 13 and (out / "COMMITTED").is_file()


def test_too_many_bad_rows_leave_the_directory_empty(tmp_path, monkeypatch):
    def source(cfg, scratch):
        return scratch, iter([Row(i + 1, _record(image="gone.png", question=f"Q{i}")) for i in range(10)])

    monkeypatch.setitem(prep_module.SOURCES, "jsonl", source)  # a source of the closed set, reading bad rows
    with pytest.raises(PrepError, match=r"max_bad_fraction=0.01\): image_missing \(10; e.g. row 1, row 2, row 3\)"):
        prepare(DataConfig(source="jsonl"), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_missing_column_names_the_file_and_the_expected_columns(tmp_path):
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=4, n_test=2)
    with (src / "train.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["Figure_path", "Question", "Answer_label"], ["a.jpg", "q", "A"]])
    out = medrl_here("prep", "--source", "pmc-vqa", "--input", str(src), "--out", str(tmp_path / "d"))
    assert out.returncode == 2
    assert f"{src / 'train.csv'}: missing column(s) Choice A, Choice B; expected columns Figure_path" in out.stderr


@pytest.mark.parametrize("kind", ["binary", "empty", "json"])
def test_an_unreadable_file_names_itself_and_what_was_expected(tmp_path, kind):
    if kind == "json":
        src = slake(tmp_path / "slake")
        (src / "test.json").write_text('[{"img_name": "x.jpg", "question": ', encoding="utf-8")
        cfg, match = DataConfig(source="slake", input=str(src)), rf"{src / 'test.json'}: not valid JSON .*img_name"
    else:
        src = pmc_vqa(tmp_path / "PMC-VQA", n_train=4, n_test=2)
        (src / "test.csv").unlink()
        (src / "test.csv").write_bytes(png_bomb(64) if kind == "binary" else b"")
        cfg, match = DataConfig(source="pmc-vqa", input=str(src)), rf"{src / 'test.csv'}: .*Figure_path, Question"
    with pytest.raises(PrepError, match=match):
        prepare(cfg, tmp_path / "out")


def test_allowed_formats_are_config(tmp_path):
    src = slake(tmp_path / "slake")
    cfg = DataConfig(source="slake", input=str(src), image_formats=["png"], max_bad_fraction=1.0)
    with pytest.raises(
        PrepError, match=r"both splits are empty \(24 rows read: 0 in the test split, 18 quarantined, 6 filtered"
    ):
        prepare(cfg, tmp_path / "out")  # every row is a JPEG: quarantined, which leaves nothing to train on
    summary = prepare(cfg.model_copy(update={"image_formats": ["png", "jpeg"]}), tmp_path / "out")
    assert summary["reasons"] == {} and summary["train"] > 0
    with pytest.raises(PrepError, match=r"data.image_formats=\['PSD'\]"):
        prepare(DataConfig(source="slake", input=str(src), image_formats=["PSD"]), tmp_path / "out2")


def test_an_empty_train_split_prepares_for_evaluation_and_training_on_it_is_refused(
    tmp_path, synthetic_data, tiny_model
):
    """issue 30: a source whose rows are all of the test split used to prepare silently, and `medrl train` then died
    in TRL with a StopIteration. An evaluation-only dataset is a real use (MS-CXR is a test set): prep says the train
    split is empty, and training on it is refused by name before a model loads."""
    src = tmp_path / "src"
    shutil.copytree(synthetic_data / "images", src / "images")
    shutil.copyfile(synthetic_data / "test.jsonl", src / "test.jsonl")
    out = tmp_path / "data"
    prepared = medrl_here("prep", "--source", "jsonl", "--input", str(src), "--out", str(out))
    assert prepared.returncode == 0, prepared.stderr
    assert "the train split is empty (16 rows read: 16 in the test split, 0 quarantined, 0 filtered)" in (
        prepared.stderr + prepared.stdout
    )
    assert json.loads((out / "summary.json").read_text())["train"] == 0
    trained = medrl_here("train", "--preset", "demo", "--arm", "sft", "--data", str(out), "--init", str(tiny_model),
                        "--out", str(tmp_path / "model"))  # fmt: skip
    assert trained.returncode == 2, trained.stderr
    assert "the train split has no rows" in trained.stderr and "Traceback" not in trained.stderr
    assert not (tmp_path / "model").exists()


def test_a_committed_dataset_is_replaced_only_with_replace(tmp_path):
    """issue 30: `medrl prep --out D` onto a committed dataset used to replace it without a word."""
    out = tmp_path / "data"
    args = ["prep", "--out", str(out), "--train-size", "4"]
    assert medrl_here(*args, "--test-size", "2").returncode == 0
    before = (out / "MANIFEST.json").read_bytes()
    refused = medrl_here(*args, "--test-size", "3")
    assert refused.returncode == 2, refused.stderr
    assert f"error: --out {out}: a dataset is already committed there" in refused.stderr
    assert "pass --replace" in refused.stderr and "Traceback" not in refused.stderr
    assert (out / "MANIFEST.json").read_bytes() == before and len(read_records(out, "test")) == 2
    replaced = medrl_here(*args, "--test-size", "3", "--replace")
    assert replaced.returncode == 0, replaced.stderr
    assert len(read_records(out, "test")) == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["data"]


# ------------------------------------------------------------------------------------- subsets and speed


def _ids(out, split):
    return [r.id for r in read_records(out, split)]


def test_subsets_are_deterministic_nested_and_seeded(tmp_path):
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=60, n_test=20)

    def subset(name, seed, train, test):
        prepare(
            DataConfig(source="pmc-vqa", input=str(src), train_size=train, test_size=test, seed=seed), tmp_path / name
        )
        return _ids(tmp_path / name, "train"), _ids(tmp_path / name, "test")

    a, again, other, bigger = subset("a", 0, 10, 5), subset("b", 0, 10, 5), subset("c", 1, 10, 5), subset("d", 0, 30, 7)
    assert a == again and len(a[0]) == 10 and len(a[1]) == 5
    assert set(a[0]) != set(other[0])
    assert bigger[0][:10] == a[0] and bigger[1][:5] == a[1]  # a larger subset keeps the smaller one
    assert all(i.startswith("pmc-vqa-train-") for i in a[0]) and all(i.startswith("pmc-vqa-test-") for i in a[1])
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["outcomes"]["unselected"] == 80 - 15
    assert len(list((tmp_path / "a" / "images").iterdir())) == 15  # only the kept rows' images are copied


def test_worker_processes_give_the_same_dataset(tmp_path):
    """More rows than one batch, so the image checks run in a pool of two processes."""
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=prep_module.BATCH + 90, n_test=30, share=2)
    (src / "images" / rows_figure(src)).write_bytes(truncated_jpeg())
    cfg = DataConfig(source="pmc-vqa", input=str(src), train_size=None, test_size=None)
    one = prepare(cfg, tmp_path / "one", workers=1)
    two = prepare(cfg, tmp_path / "two", workers=2)
    assert one == two and one["reasons"] == {"image_truncated": 2}
    for name in ("train.jsonl", "test.jsonl", "quarantine.jsonl"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text()


def rows_figure(src):
    with (src / "train.csv").open() as f:
        return list(csv.DictReader(f))[300]["Figure_path"]


def test_prep_help_lists_every_source():
    out = medrl_here("prep", "--help")
    assert out.returncode == 0
    for name in SOURCES:
        assert name in out.stdout


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(ValidationError, match="'synthetic', 'pmc-vqa', 'vqa-rad', 'path-vqa', 'slake', 'omnimedvqa'"):
        DataConfig(source="dicom-cloud")
