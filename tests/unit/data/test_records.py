"""The record files of a prepared dataset (medrl.data.records)."""

import json

import pytest

from medrl.config import load_config
from medrl.data.records import DatasetError, read_records
from medrl.evaluate.run import rescore


def _split(tmp_path, rows):
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_repeated_id_in_a_split_is_refused_not_joined_to_the_wrong_question(tmp_path):
    """Two test questions under one id (a dataset written by hand, not by prep): rescoring joins stored answers by
    id, and gave both questions the second one's answer (both then scored on it)."""
    base = {"choices": ["left", "right"], "image": "a.png"}
    rows = [
        {**base, "id": "q", "question": "Which side is the mass?", "answer": "left", "answer_label": "A"},
        {**base, "id": "q", "question": "Which side is the tube?", "answer": "right", "answer_label": "B"},
    ]
    _split(tmp_path, rows)
    with pytest.raises(DatasetError, match=r"records 1 and 2 have the same id.*medrl prep"):
        read_records(tmp_path, "test")
    stored = [{"id": "q", "completion": "<answer>A</answer>"}, {"id": "q", "completion": "<answer>B</answer>"}]
    with pytest.raises(DatasetError):
        rescore(load_config(preset="demo"), tmp_path, stored)
    _split(tmp_path, [rows[0], {**rows[1], "id": "q2"}])
    assert [r.id for r in read_records(tmp_path, "test")] == ["q", "q2"]
