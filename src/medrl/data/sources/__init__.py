"""Readers of public medical VQA datasets in the layout they are downloaded in, one module per source.

A reader returns the folder its image paths are relative to and an iterator of `Row`s, and raises `PrepError`
(the chest X-ray readers in `medrl.data.cxr` too); checking rows, dropping duplicates, drawing subsets and writing
the prepared dataset happen in `medrl.data.prep`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medrl.config import DataConfig
from medrl.data.records import Record
from medrl.errors import MedrlError


class PrepError(MedrlError, RuntimeError):
    """The source cannot be prepared; the message names the input and the fix."""


@dataclass
class Row:
    """One source row: a record, or the reason code it is bad. `number` is 1-based within `file`.

    `filtered` names why a good row is left out on purpose (e.g. `language`); such rows are not bad.
    """

    number: int
    record: Record | None = None
    reason: str | None = None
    file: str = ""
    filtered: str | None = None


# A source reads `cfg.input` and may write files under `scratch` (deleted after prep); the image paths of
# its records are relative to the folder it returns.
Source = Callable[[DataConfig, Path], tuple[Path, Iterator[Row]]]

YES_NO = ("yes", "no")


def input_path(cfg: DataConfig) -> Path:
    """`--input` as an existing path, or an error naming the flag."""
    if not cfg.input:
        raise PrepError(f"--input is required for source '{cfg.source}': give the folder the dataset was unpacked to")
    path = Path(cfg.input).expanduser()
    if not path.exists():
        raise PrepError(f"--input {cfg.input}: no such file or folder (source '{cfg.source}')")
    return path


def text(value: Any) -> str:
    """A cell as text: None is empty, numbers become their decimal form, surrounding whitespace goes."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="surrogateescape")
    return str(value).strip(" \t\r\n\xa0\u200a\u200b")


OPTION_PREFIX = re.compile(r"^\(?([A-Za-z])\s*[:.)]\s*(.*)$", re.DOTALL)


def option_text(cell: str, letter: str) -> str:
    """`A:Diffuse uptake`, `A. x`, `(A) x`, ` A : x ` -> the text, for the option at letter A; a prefix of another
    letter is text (`E. coli` at option B)."""
    m = OPTION_PREFIX.match(cell)
    if m and m.group(1).upper() == letter:
        return text(m.group(2))
    return cell


def fold(value: str) -> str:
    """What two answers must share to be the same: case and runs of whitespace do not count.

    >>> fold("  Diffuse  Uptake ")
    'diffuse uptake'
    """
    return " ".join(value.casefold().split())


def read_json(path: Path, expected: str) -> Any:
    """A JSON file; bytes that are not UTF-8 survive as lone surrogates so the row check can name them."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise PrepError(f"{path}: cannot read it ({err.strerror}); expected {expected}") from None
    try:
        return json.loads(raw.decode("utf-8-sig", errors="surrogateescape"))
    except json.JSONDecodeError as err:
        raise PrepError(f"{path}: not valid JSON (line {err.lineno}); expected {expected}") from None


def read_json_list(path: Path, expected: str, required: tuple[str, ...]) -> list:
    """A JSON file holding a list of objects that, taken together, have every `required` field (a row that lacks
    one is the row check's to report; a file where none has it is the wrong file)."""
    entries = read_json(path, expected)
    if not isinstance(entries, list):
        raise PrepError(f"{path}: expected {expected}")
    present = set().union(*(e.keys() for e in entries if isinstance(e, dict))) if entries else set(required)
    missing = [k for k in required if k not in present]
    if missing:
        raise PrepError(f"{path}: missing field(s) {', '.join(missing)}; expected {expected}")
    return entries


def split_of_name(name: str) -> str | None:
    """The split a file or folder name stands for. Validation rows train: medrl selects no checkpoints on them.

    >>> split_of_name("train-00000-of-00001.parquet"), split_of_name("validation.json"), split_of_name("test_2.csv")
    ('train', 'train', 'test')
    """
    lowered = name.lower()
    for prefix, split in (("train", "train"), ("valid", "train"), ("val", "train"), ("dev", "train"), ("test", "test")):
        if lowered.startswith(prefix):
            return split
    return None


def held_out(key: str, test_fraction: float) -> bool:
    """Whether an image goes to the test split of a source without one: a hash of its path, not of the
    seed, so the test set stays the same across seeds and subset sizes and no image is in both splits."""
    digest = hashlib.blake2b(key.encode("utf-8", errors="surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < test_fraction


def vqa_record(
    *,
    id: str,
    image: str,
    question: str,
    answer: str,
    source: str,
    split: str,
    cfg: DataConfig,
    answer_type: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Record:
    """A record of a free-answer dataset. Yes/no answers are closed; with `data.yes_no_choices` they get the
    options ["yes", "no"], so the prompt lists them and accuracy is an option match like multiple choice."""
    is_yes_no = fold(answer) in YES_NO
    if answer_type is None:
        answer_type = "closed" if is_yes_no else "open"
    choices: list[str] = []
    label = None
    if is_yes_no and answer_type == "closed" and cfg.yes_no_choices:
        choices = list(YES_NO)
        answer = fold(answer)
        label = "AB"[choices.index(answer)]
    return Record(
        id=id,
        image=image,
        question=question,
        choices=choices,
        answer=answer,
        answer_label=label,
        source=source,
        split=split,  # type: ignore[arg-type]
        meta={**(meta or {}), "answer_type": answer_type},
    )
