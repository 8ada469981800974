"""The record format of a prepared dataset (one JSON line per question) and its files."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medrl.errors import MedrlError

LETTERS = "ABCDEFGHIJ"
SPLIT_FILES = {"train": "train.jsonl", "test": "test.jsonl"}


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    image: str | list[str] | None = Field(None, description="Path(s) relative to the dataset root.")
    question: str
    choices: list[str] = Field(default_factory=list, description="Option texts, no letter prefix; empty: open.")
    answer: str
    answer_label: str | None = Field(None, description="Letter of the answer among choices.")
    task: Literal["vqa", "report", "grounding"] = "vqa"
    source: str = ""
    split: Literal["train", "test"] = "train"
    meta: dict[str, Any] = Field(default_factory=dict)
    boxes: list[list[float]] | None = None
    report: str | None = None

    @property
    def images(self) -> list[str]:
        if self.image is None:
            return []
        return [self.image] if isinstance(self.image, str) else list(self.image)


def write_jsonl(path: Path, rows: Iterable[BaseModel | dict[str, Any]]) -> int:
    """Write rows to `path` atomically (temp file in the same folder, then rename); returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    n = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                data = row.model_dump(mode="json", exclude_none=True) if isinstance(row, BaseModel) else row
                f.write(json.dumps(data, ensure_ascii=False) + "\n")
                n += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


class DatasetError(MedrlError, ValueError):
    """A prepared dataset that breaks the record contract; the message says to prepare it again."""


def read_records(dataset_dir: Path, split: str) -> list[Record]:
    """The records of one split. Ids must be unique within it: predictions, rescoring and the paired tests of the
    report join rows by id, and two questions under one id would silently take each other's answers."""
    path = Path(dataset_dir) / SPLIT_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {dataset_dir} is not a prepared dataset (run `medrl prep`)")
    records = [Record.model_validate(row) for row in iter_jsonl(path)]
    first: dict[str, int] = {}
    for number, rec in enumerate(records, start=1):
        if rec.id in first:
            raise DatasetError(
                f"{path}: records {first[rec.id]} and {number} have the same id; ids must be unique (medrl prep "
                "quarantines a repeated id as duplicate_id): prepare the dataset again with `medrl prep`"
            )
        first[rec.id] = number
    return records


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
