"""Each source read from a small copy in its exact download layout: the records, splits and answer types."""

import json

import pytest

from medrl.config import DataConfig
from medrl.data.prep import prepare
from medrl.data.records import read_records
from medrl.data.sources import PrepError
from tests.support.medvqa_fixtures import (
    hf_parquet,
    hf_saved,
    omnimedvqa,
    pmc_rows,
    pmc_vqa,
    records_jsonl,
    slake,
    write_csv,
)


def prep(source, src, out, **kw):
    cfg = {"train_size": None, "test_size": None, **kw}
    return prepare(DataConfig(source=source, input=str(src), **cfg), out)


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("version", [1, 2])
def test_pmc_vqa_v1_and_v2_layouts(tmp_path, version):
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=24, n_test=8, version=version)
    summary = prep("pmc-vqa", src, tmp_path / "out")
    assert (summary["train"], summary["test"], summary["quarantined"]) == (24, 8, 0)
    train = {r.question: r for r in read_records(tmp_path / "out", "train")}
    for row in pmc_rows(24, seed=1):  # what the fixture wrote, with `A:x`, ` B:x `, `C. x`, `D) x`, `A : x` cells
        rec = train[row["Question"]]
        assert rec.choices == row["options"]
        assert rec.answer == row["Answer"] and rec.answer_label == row["Answer_label"]
        assert rec.image == f"images/{row['Figure_path']}" and (tmp_path / "out" / rec.image).is_file()
        assert rec.meta["answer_type"] == "closed" and rec.split == "train" and rec.source == "pmc-vqa"
    assert {r.split for r in read_records(tmp_path / "out", "test")} == {"test"}


def test_pmc_vqa_reads_one_csv_or_a_list(tmp_path):
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=10, n_test=6)
    summary = prep("pmc-vqa", src / "test.csv", tmp_path / "one")
    assert (summary["train"], summary["test"]) == (0, 6)
    write_csv(src / "test_clean.csv", pmc_rows(6, seed=2, first_image=10_000)[:3])
    summary = prep("pmc-vqa", f"{src / 'train.csv'},{src / 'test_clean.csv'}", tmp_path / "two")
    assert (summary["train"], summary["test"]) == (10, 3)


def test_pmc_vqa_answer_and_letter_must_agree(tmp_path):
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=40, n_test=4)
    rows = pmc_rows(40, seed=1)
    rows[4]["Answer_label"] = "ABCD"[("ABCD".index(rows[4]["Answer_label"]) + 1) % 4]
    rows[9]["Answer"] = "Something not offered"
    rows[14]["Answer_label"] = "F"
    rows[19]["Answer"] = ""  # the letter alone still names the option
    write_csv(src / "train.csv", rows)
    summary = prep("pmc-vqa", src, tmp_path / "out", max_bad_fraction=0.2)
    lines = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert lines == [
        {"file": "train.csv", "source_row": 5, "reason": "label_mismatch"},
        {"file": "train.csv", "source_row": 10, "reason": "answer_not_in_choices"},
        {"file": "train.csv", "source_row": 15, "reason": "label_invalid"},
    ]
    rec = next(r for r in read_records(tmp_path / "out", "train") if r.question == rows[19]["Question"])
    assert rec.answer == rec.choices["ABCD".index(rows[19]["Answer_label"])]
    assert summary["reasons"] == {"label_mismatch": 1, "answer_not_in_choices": 1, "label_invalid": 1}


def test_slake_english_by_default_validation_trains_yes_no_closed(tmp_path):
    src = slake(tmp_path / "Slake1.0")
    summary = prep("slake", src, tmp_path / "out")
    assert summary["filtered"] == {"language": 6} and summary["outcomes"]["filtered"] == 6
    train, test = read_records(tmp_path / "out", "train"), read_records(tmp_path / "out", "test")
    assert {r.meta["source_split"] for r in train} == {"train", "validation"}
    assert {r.meta["source_split"] for r in test} == {"test"}
    by_q = {}
    for r in train + test:
        by_q.setdefault(r.question, []).append(r)
        assert r.meta["lang"] == "en" and r.meta["modality"] in ("CT", "MRI", "X-ray")
        assert (tmp_path / "out" / r.image).is_file() and r.image.startswith("images/xmlab")
    for r in by_q["Is the lung healthy?"]:
        assert r.choices == ["yes", "no"] and r.answer in ("yes", "no") and r.meta["answer_type"] == "closed"
        assert r.answer_label == "AB"[r.choices.index(r.answer)]
    for r in by_q["Which organ is abnormal?"]:
        assert r.choices == [] and r.meta["answer_type"] == "open"
    for r in by_q["Which is bigger in this image, liver or spleen?"]:  # closed but not yes/no: no options given
        assert r.choices == [] and r.meta["answer_type"] == "closed"

    every = prep("slake", src, tmp_path / "all", lang=None)
    assert every["filtered"] == {} and every["train"] + every["test"] == 24


def test_vqa_rad_saved_dataset(tmp_path):
    src = hf_saved(tmp_path / "vqa-rad", n_train=16, n_test=8)
    summary = prep("vqa-rad", src, tmp_path / "out")
    assert (summary["train"], summary["test"]) == (16, 8)
    assert summary["reasons"] == {"duplicate": 1}  # the repeated (image, question) pair
    quarantined = json.loads((tmp_path / "out" / "quarantine.jsonl").read_text())
    assert quarantined == {"file": "train", "source_row": 17, "reason": "duplicate"}
    train, test = read_records(tmp_path / "out", "train"), read_records(tmp_path / "out", "test")
    closed = [r for r in train if r.meta["answer_type"] == "closed"]
    opened = [r for r in train if r.meta["answer_type"] == "open"]
    assert len(closed) == len(opened) == 8
    assert all(r.choices == ["yes", "no"] and r.answer in ("yes", "no") for r in closed)  # "Yes" folded
    assert all(r.choices == [] and r.answer_label is None for r in opened)
    # four distinct pictures per split, each stored once under its content hash
    assert len({r.image for r in train}) == 4
    assert len(list((tmp_path / "out" / "images").iterdir())) == len({r.image for r in train + test}) == 8


def test_path_vqa_parquet_and_open_yes_no(tmp_path):
    src = hf_parquet(tmp_path / "path-vqa")
    summary = prep("path-vqa", src, tmp_path / "out", yes_no_choices=False)
    assert (summary["train"], summary["test"]) == (20, 8)  # validation joins train
    assert summary["answer_types"] == {"train": {"closed": 10, "open": 10}, "test": {"closed": 4, "open": 4}}
    train = read_records(tmp_path / "out", "train")
    assert {r.meta["source_split"] for r in train} == {"train-00000-of-00001", "validation-00000-of-00001"}
    assert all(r.choices == [] for r in train)  # yes/no stays closed but gets no options when asked so
    assert all((tmp_path / "out" / r.image).is_file() for r in train)


def test_omnimedvqa_options_modality_and_a_split_by_image(tmp_path):
    src = omnimedvqa(tmp_path / "OmniMedVQA", per_dataset=12)
    summary = prep("omnimedvqa", src, tmp_path / "out", test_fraction=0.3)
    train, test = read_records(tmp_path / "out", "train"), read_records(tmp_path / "out", "test")
    assert summary["train"] + summary["test"] == 36 and 0 < len(test) < len(train)
    assert not {r.image for r in train} & {r.image for r in test}
    for r in train + test:
        assert r.answer == r.choices["ABCD".index(r.answer_label)] and r.meta["answer_type"] == "closed"
    counts = {d: {len(r.choices) for r in train + test if r.meta["dataset"] == d} for d in ("ACRIMA", "MIAS")}
    assert counts == {"ACRIMA": {4}, "MIAS": {2}}
    chest = [r for r in train + test if r.meta["dataset"] == "Chest CT Scan"]
    assert {r.meta["modality"] for r in chest} == {"CT(Computed Tomography)"}  # `modality` spelling too
    assert {r.meta["access"] for r in train + test} == {"Open-access", "Restricted-access"}
    assert {r.meta["question_type"] for r in train + test} >= {"Disease Diagnosis", "Modality Recognition"}
    again = prep("omnimedvqa", src, tmp_path / "again", test_fraction=0.3, seed=7)
    assert again["test"] == summary["test"]  # the held-out images do not depend on the seed


def test_jsonl_folder_and_single_file(tmp_path):
    src = records_jsonl(tmp_path / "mine")
    summary = prep("jsonl", src, tmp_path / "out")
    assert (summary["train"], summary["test"]) == (12, 6)
    recs = read_records(tmp_path / "out", "train")
    assert {r.meta["answer_type"] for r in recs} == {"closed", "open"}
    assert next(r for r in recs if r.choices == []).meta["modality"] == "CT"
    lines = (src / "train.jsonl").read_text().splitlines()
    (src / "all.jsonl").write_text(
        "\n".join([*[json.dumps({**json.loads(x), "split": None}) for x in lines[:1]], *lines])
    )
    summary = prep("jsonl", src / "all.jsonl", tmp_path / "file", max_bad_fraction=0.1)
    assert summary["reasons"] == {"record_invalid": 1} and summary["train"] == 12


def test_hub_name_without_a_hub_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PrepError, match="not a local path, and loading it as a hub dataset failed"):
        prep("vqa-rad", "nobody-here/not-a-dataset", tmp_path / "out")


@pytest.mark.parametrize("name", ["medrl.data.images", "medrl.data.sources", "medrl.data.prep"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def _drop_field(path, field):
    entries = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps([{k: v for k, v in e.items() if k != field} for e in entries]), encoding="utf-8")
    return path


def _drop_column(path, column):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.drop_columns([column]), path)
    return path


@pytest.mark.parametrize("source", ["slake", "omnimedvqa", "path-vqa", "vqa-rad"])
def test_a_missing_field_names_the_file_and_what_is_expected(tmp_path, source):
    if source == "slake":
        src = slake(tmp_path / "s")
        bad = _drop_field(src / "validation.json", "answer")
        match = rf"{bad}: missing field\(s\) answer; expected a JSON list of objects with img_name, question, answer"
    elif source == "omnimedvqa":
        src = omnimedvqa(tmp_path / "o", per_dataset=3)
        bad = _drop_field(src / "QA_information" / "Open-access" / "ACRIMA.json", "gt_answer")
        match = rf"{bad}: missing field\(s\) gt_answer; expected .*option_A"
    elif source == "path-vqa":
        src = hf_parquet(tmp_path / "p")
        bad = _drop_column(src / "data" / "test-00000-of-00001.parquet", "question")
        match = rf"{bad}: missing column\(s\) question; expected columns image, question, answer"
    else:
        import datasets

        src = tmp_path / "v"
        datasets.Dataset.from_dict({"img": [b"x"], "question": ["q"], "answer": ["a"]}).save_to_disk(str(src))
        match = rf"{src}: missing column\(s\) image; expected columns image, question, answer"
    with pytest.raises(PrepError, match=match):
        prep(source, src, tmp_path / "out")


def test_a_source_committed_to_the_store_is_read_from_there(tmp_path, monkeypatch):
    """`medrl store put` a download, then prep from its URI (a folder, or a file inside one); the file:// backend
    here, SeaweedFS in tests/integration/test_s3_store.py."""
    from typer.testing import CliRunner

    from medrl.cli import app

    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    src = pmc_vqa(tmp_path / "PMC-VQA", n_train=10, n_test=6)
    uri = f"file://{tmp_path}/store/datasets/pmc-vqa"
    put = CliRunner().invoke(app, ["store", "put", str(src), uri])
    assert put.exit_code == 0, put.output
    assert f"{uri} (18 files" in put.output  # 16 images and two CSVs, counted from the committed manifest
    again = CliRunner().invoke(app, ["store", "put", str(src), uri])
    assert again.exit_code != 0 and "--replace" in str(again.exception)

    summary = prep("pmc-vqa", uri, tmp_path / "out")
    assert (summary["train"], summary["test"], summary["quarantined"]) == (10, 6, 0)
    one = prep("pmc-vqa", f"{uri}/test.csv", tmp_path / "one")
    assert (one["train"], one["test"]) == (0, 6)
    with pytest.raises(PrepError, match="medrl store put"):
        prep("pmc-vqa", f"file://{tmp_path}/store/datasets/nothing", tmp_path / "none")


def test_a_jsonl_file_with_a_byte_order_mark_keeps_its_first_record(tmp_path):
    """A file saved with a UTF-8 byte-order mark: its first line failed to parse and the row was quarantined as
    record_invalid, quietly under data.max_bad_fraction."""
    src = records_jsonl(tmp_path / "mine")
    train = src / "train.jsonl"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    summary = prep("jsonl", src, tmp_path / "out", max_bad_fraction=0.1)
    assert summary["reasons"] == {} and (summary["train"], summary["test"]) == (12, 6)


def test_jsonl_options_that_carry_their_own_letters_lose_them_and_answer_types_are_read_in_any_case(tmp_path):
    """`choices: ["A: Liver", "B: Lung"]` made the prompt read `A: A: Liver`; `answer_type: CLOSED` (SLAKE's own
    spelling) was left out of the closed/open counts. An option whose text only starts like another letter stays."""
    src = records_jsonl(tmp_path / "mine")
    for split in ("train", "test"):
        path = src / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            if "choices" in row:
                row["choices"] = ["A: Liver", "(B) Lung"] if row["id"].endswith("1") else ["E. coli", "Lung"]
                row["answer"] = row["choices"][1]
                row["meta"] = {"answer_type": "CLOSED"}
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = prep("jsonl", src, tmp_path / "out")
    assert summary["reasons"] == {}
    closed = [r for r in read_records(tmp_path / "out", "train") if r.choices]
    assert {tuple(r.choices) for r in closed} == {("Liver", "Lung"), ("E. coli", "Lung")}
    assert all(r.answer == "Lung" and r.answer_label == "B" and r.meta["answer_type"] == "closed" for r in closed)
    assert summary["answer_types"]["train"] == {"closed": 6, "open": 6}
