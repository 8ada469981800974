"""Our own record format (one JSON object per line, see `medrl.data.records.Record`) for any other dataset.

`--input` is a folder holding `train.jsonl` and/or `test.jsonl`, or one `.jsonl` file; image paths are relative
to the folder of the file. A record without `split` takes it from the file name, else from a hash of its image.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from medrl.config import DataConfig
from medrl.data.records import LETTERS, Record
from medrl.data.sources import PrepError, Row, held_out, input_path, option_text, split_of_name

NAME = "jsonl"


def read(cfg: DataConfig, scratch: Path) -> tuple[Path, Iterator[Row]]:
    path = input_path(cfg)
    if path.is_file():
        files = [path]
    else:
        files = [path / n for n in ("train.jsonl", "test.jsonl") if (path / n).is_file()]
        if not files:
            raise PrepError(f"--input {path}: no train.jsonl or test.jsonl there; give the folder or a .jsonl file")
    root = files[0].parent

    def rows() -> Iterator[Row]:
        for file in files:
            try:
                # utf-8-sig: a byte-order mark (a file saved by Windows Notepad) would make the first record invalid
                f = file.open(encoding="utf-8-sig", errors="surrogateescape")
            except OSError as err:
                raise PrepError(f"{file}: cannot read it ({err.strerror}); expected one record per line") from None
            with f:
                for number, line in enumerate(f, start=1):
                    if line.strip():
                        yield _row(line, number, file, cfg)

    return root, rows()


def _row(line: str, number: int, file: Path, cfg: DataConfig) -> Row:
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ValueError
        if "split" not in data:
            image = data.get("image")
            key = image if isinstance(image, str) else json.dumps(image)
            data["split"] = split_of_name(file.name) or ("test" if held_out(key, cfg.test_fraction) else "train")
        record = Record.model_validate(data)
    except (ValueError, ValidationError):
        return Row(number, reason="record_invalid", file=file.name)
    own_letters(record)
    kind = str(record.meta.get("answer_type") or "").strip().lower()  # SLAKE's own files say CLOSED / OPEN
    record.meta["answer_type"] = kind if kind in ("closed", "open") else ("closed" if record.choices else "open")
    if not record.source:
        record.source = NAME
    return Row(number, record, file=file.name)


def own_letters(record: Record) -> None:
    """Options that each carry their own letter (`A: liver`, `B: spleen`) lose it, in the answer too: the prompt
    letters the options itself, and would read `A: A: liver`. Left alone unless every option carries its own."""
    if not 2 <= len(record.choices) <= len(LETTERS):
        return  # refused as choices_invalid by the record checks
    bare = [option_text(c, letter) for c, letter in zip(record.choices, LETTERS, strict=False)]
    if any(b == c for b, c in zip(bare, record.choices, strict=True)):
        return
    if record.answer in record.choices:
        record.answer = bare[record.choices.index(record.answer)]
    record.choices = bare
