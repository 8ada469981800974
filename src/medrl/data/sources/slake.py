"""SLAKE as downloaded: `train.json`, `validation.json`, `test.json` and the unzipped `imgs/` folder.

Questions come in English and Chinese (`q_lang`); `data.lang` keeps one language (English by default).
Validation rows join the training split, since medrl selects no checkpoint on them; the test split stays as is.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.sources import PrepError, Row, input_path, read_json_list, split_of_name, text, vqa_record

NAME = "slake"
FILES = ("train.json", "validation.json", "test.json")
REQUIRED = ("img_name", "question", "answer")
EXPECTED = "a JSON list of objects with img_name, question, answer, q_lang, answer_type (CLOSED/OPEN), modality"


def read(cfg: DataConfig, scratch: Path) -> tuple[Path, Iterator[Row]]:
    path = input_path(cfg)
    files = [path] if path.is_file() else [path / n for n in FILES if (path / n).is_file()]
    if not files:
        looked = ", ".join(FILES)
        raise PrepError(f"--input {path}: no SLAKE files there (looked for {looked}); give the unzipped folder")
    base = files[0].parent
    root = base / "imgs" if (base / "imgs").is_dir() else base
    loaded = []
    for file in files:
        split = split_of_name(file.name)
        if split is None:
            raise PrepError(f"{file}: cannot tell its split from the name; name it train/validation/test.json")
        loaded.append((file, split, read_json_list(file, EXPECTED, REQUIRED)))

    def rows() -> Iterator[Row]:
        for file, split, entries in loaded:
            for number, entry in enumerate(entries, start=1):
                row = _row(entry, number, split, file.stem, cfg)
                row.file = file.name
                yield row

    return root, rows()


def _row(entry: object, number: int, split: str, stem: str, cfg: DataConfig) -> Row:
    if not isinstance(entry, dict) or any(entry.get(k) is None for k in REQUIRED):
        return Row(number, reason="row_malformed")
    lang = text(entry.get("q_lang")) or "en"
    if cfg.lang and lang != cfg.lang:
        return Row(number, filtered="language")
    kind = text(entry.get("answer_type")).lower()
    meta = {
        "modality": text(entry.get("modality")),
        "location": text(entry.get("location")),
        "content_type": text(entry.get("content_type")),
        "lang": lang,
        "source_split": stem,
    }
    record = vqa_record(
        id=f"{NAME}-{stem}-{text(entry.get('qid')) or number}",
        image=text(entry["img_name"]),
        question=text(entry["question"]),
        answer=text(entry["answer"]),
        source=NAME,
        split=split,
        cfg=cfg,
        answer_type=kind if kind in ("closed", "open") else None,
        meta=meta,
    )
    return Row(number, record)
