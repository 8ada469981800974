"""Prep: the prepared-dataset layout, determinism, and quarantine of bad rows."""

import json

import pytest
from PIL import Image

from medrl.config import DataConfig
from medrl.data import prep as prep_module
from medrl.data.prep import PrepError, Row, check_record, prepare
from medrl.data.records import Record, read_records


def test_synthetic_layout(synthetic_data):
    names = {p.name for p in synthetic_data.iterdir()}
    assert {"train.jsonl", "test.jsonl", "images", "quarantine.jsonl", "summary.json"} <= names
    train, test = read_records(synthetic_data, "train"), read_records(synthetic_data, "test")
    assert (len(train), len(test)) == (64, 16)
    for rec in train[:8]:
        assert rec.answer in rec.choices and len(rec.choices) == 4
        assert "ABCD"[rec.choices.index(rec.answer)] == rec.answer_label
        assert (synthetic_data / rec.image).is_file()
    summary = json.loads((synthetic_data / "summary.json").read_text())
    assert summary == {"source": "synthetic", "rows": 80, "train": 64, "test": 16, "quarantined": 0, "reasons": {}}


def test_synthetic_answers_are_balanced_and_deterministic(tmp_path):
    a = prepare(DataConfig(train_size=200, test_size=8, seed=5), tmp_path / "a")
    b = prepare(DataConfig(train_size=200, test_size=8, seed=5), tmp_path / "b")
    assert a == b
    assert (tmp_path / "a" / "train.jsonl").read_text() == (tmp_path / "b" / "train.jsonl").read_text()
    answers = [r.answer for r in read_records(tmp_path / "a", "train")]
    assert all(answers.count(q) > 30 for q in set(answers)) and len(set(answers)) == 4


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
        ({"answer": "c"}, "answer_not_in_choices"),
        ({"answer_label": "A"}, "label_mismatch"),
        ({"image": "../outside.png"}, "image_path_outside_root"),
        ({"image": "/etc/passwd"}, "image_path_outside_root"),
        ({"image": "missing.png"}, "image_missing"),
        ({"image": "empty.png"}, "image_empty"),
        ({"image": "text.png"}, "image_unreadable"),
    ],
)
def test_check_record(tmp_path, change, reason):
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    assert check_record(_record(**change), tmp_path) == reason


def test_bad_rows_are_quarantined_with_reason_and_row_number(tmp_path, monkeypatch):
    def source(cfg, staging):
        Image.new("RGB", (8, 8)).save(staging / "ok.png")
        rows = [Row(i + 1, _record(id=f"r{i}", image="ok.png", question=f"Q{i}?")) for i in range(98)]
        rows.append(Row(99, _record(id="bad", image="ok.png", answer="zzz")))
        rows.append(Row(100, None, "unparsable_row"))
        return staging, iter(rows)

    monkeypatch.setitem(prep_module.SOURCES, "fake", source)
    summary = prepare(DataConfig(source="fake", train_size=None, test_size=None, max_bad_fraction=0.05), tmp_path)
    quarantine = [json.loads(line) for line in (tmp_path / "quarantine.jsonl").read_text().splitlines()]
    assert quarantine == [
        {"source_row": 99, "reason": "answer_not_in_choices"},
        {"source_row": 100, "reason": "unparsable_row"},
    ]
    assert summary["train"] == 98 and summary["reasons"] == {"answer_not_in_choices": 1, "unparsable_row": 1}


def test_too_many_bad_rows_fail_naming_the_reasons(tmp_path, monkeypatch):
    def source(cfg, staging):
        return staging, iter([Row(i + 1, _record(image="gone.png", question=f"Q{i}")) for i in range(10)])

    monkeypatch.setitem(prep_module.SOURCES, "fake", source)
    with pytest.raises(PrepError, match=r"max_bad_fraction=0.01\): image_missing \(10\)"):
        prepare(DataConfig(source="fake"), tmp_path)


def test_unknown_source_lists_the_known_ones(tmp_path):
    with pytest.raises(PrepError, match="synthetic"):
        prepare(DataConfig(source="dicom-cloud"), tmp_path)
