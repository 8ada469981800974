"""PMC-VQA as downloaded: v1 `train.csv`/`test.csv`/`test_clean.csv` or v2 `train_2.csv`/`test_2.csv` beside
the unzipped image folder; four options per question (`A:Diffuse uptake pattern`), the answer as text and letter.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.images import confined
from medrl.data.records import LETTERS, Record
from medrl.data.sources import PrepError, Row, fold, input_path, option_text, split_of_name, text

NAME = "pmc-vqa"
EXPECTED = "Figure_path, Question, Answer (or Anwser), Choice A, Choice B, Choice C, Choice D, Answer_label"
# v2 first: it is the cleaned release. test_clean.csv (2K hand-checked rows) is read only when named.
LAYOUTS = (("train_2.csv", "test_2.csv"), ("train.csv", "test.csv"))
# Where the image archives unpack to, relative to the CSV files.
IMAGE_DIRS = ("images", "images/images", "figures", "images_2", "images_2/figures", "images_2/images", ".")
PROBE_ROWS = 50


def _key(header: str) -> str:
    """Header names compared without case, spaces or underscores; `Anwser` is a known misspelling."""
    key = re.sub(r"[\s_]+", "", header.lower())
    return "answer" if key == "anwser" else key


def csv_files(cfg: DataConfig) -> list[Path]:
    """The CSV files `--input` names: one file, a comma-separated list, or a folder holding v2 or v1 files."""
    if cfg.input and "," in cfg.input:
        files = [Path(p.strip()).expanduser() for p in cfg.input.split(",") if p.strip()]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise PrepError(f"--input: no such CSV file: {', '.join(missing)}")
        return files
    path = input_path(cfg)
    if path.is_file():
        return [path]
    for layout in LAYOUTS:
        found = [path / name for name in layout if (path / name).is_file()]
        if found:
            return found
    if (path / "test_clean.csv").is_file():
        return [path / "test_clean.csv"]
    looked = ", ".join(n for layout in LAYOUTS for n in layout)
    raise PrepError(
        f"--input {path}: no PMC-VQA CSV files there (looked for {looked}, test_clean.csv); "
        "give the folder holding them or the CSV file itself"
    )


def _open(path: Path):
    try:
        # surrogateescape: a cell that is not UTF-8 becomes one bad row (question_not_utf8), not a crash
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as err:
        raise PrepError(f"{path}: cannot read it ({err.strerror}); expected CSV columns {EXPECTED}") from None


def _columns(path: Path, header: list[str] | None) -> dict[str, str]:
    """Our column key -> the file's header name; names the file and the expected columns when one is missing."""
    if not header:
        raise PrepError(f"{path}: empty or not a CSV file; expected columns {EXPECTED}")
    cols = {_key(h): h for h in header if h}
    required = ["figurepath", "question", "choicea", "choiceb"]
    missing = [k for k in required if k not in cols]
    if "answer" not in cols and "answerlabel" not in cols:
        missing.append("answer")
    if missing:
        names = {"figurepath": "Figure_path", "question": "Question", "choicea": "Choice A", "choiceb": "Choice B"}
        named = ", ".join(names.get(k, "Answer or Answer_label") for k in missing)
        raise PrepError(f"{path}: missing column(s) {named}; expected columns {EXPECTED}")
    return cols


def _image_dir(path: Path, cols: dict[str, str]) -> str:
    """The folder (relative to the CSV's) holding most of the first rows' figures."""
    names: list[str] = []
    with _open(path) as f:
        for i, row in enumerate(csv.DictReader(f)):
            if i >= PROBE_ROWS:
                break
            name = text(row.get(cols["figurepath"]))
            if name:
                names.append(name)
    if not names:
        return "."
    base = path.parent
    hits = {d: sum(1 for n in names if (p := confined(base, f"{d}/{n}")) and p.is_file()) for d in IMAGE_DIRS}
    best = max(IMAGE_DIRS, key=lambda d: hits[d])
    if hits[best] == 0:
        tried = ", ".join(str(base / d) for d in IMAGE_DIRS)
        raise PrepError(
            f"{path}: none of its first {len(names)} figures is in {tried}. Unzip the image archive "
            "(images.zip / images_2.zip) beside the CSV files."
        )
    return best


def parse_row(row: dict, cols: dict[str, str], number: int, split: str, stem: str, image_dir: str) -> Row:
    """One CSV row as a record, or the reason it cannot be one."""
    if None in row or any(row.get(c) is None for c in cols.values()):
        return Row(number, reason="row_malformed")
    figure = text(row[cols["figurepath"]])
    if not figure:
        return Row(number, reason="image_missing")
    options = [option_text(text(row.get(cols.get(f"choice{c.lower()}", ""), "")), c) for c in "ABCD"]
    while options and not options[-1]:
        options.pop()  # rows with three options leave Choice D empty
    if len(options) < 2 or any(not o for o in options) or len({fold(o) for o in options}) != len(options):
        return Row(number, reason="choices_invalid")

    answer = text(row.get(cols.get("answer", ""), ""))
    label = text(row.get(cols.get("answerlabel", ""), "")).upper().strip("():. ")
    by_text = _match(answer, options)
    if answer and by_text is None:
        return Row(number, reason="answer_not_in_choices")
    by_label = None
    if label:
        if len(label) != 1 or label not in LETTERS[: len(options)]:
            return Row(number, reason="label_invalid")
        by_label = LETTERS.index(label)
        if by_text is not None and by_text != by_label:
            return Row(number, reason="label_mismatch")
    index = by_text if by_text is not None else by_label
    if index is None:
        return Row(number, reason="answer_empty")
    record = Record(
        id=f"{NAME}-{stem}-{number}",
        # an absolute figure path stays as it is, so the image check names the escape
        image=figure if image_dir == "." or figure.startswith("/") else f"{image_dir}/{figure}",
        question=text(row[cols["question"]]),
        choices=options,
        answer=options[index],
        answer_label=LETTERS[index],
        source=NAME,
        split=split,  # type: ignore[arg-type]
        meta={"answer_type": "closed"},
    )
    return Row(number, record)


def _match(answer: str, options: list[str]) -> int | None:
    """Index of the option an answer names by text (or as `B:text`), None when none or several do."""
    if not answer:
        return None
    for candidate in (answer, option_text(answer, answer[:1].upper())):
        hits = [i for i, o in enumerate(options) if fold(o) == fold(candidate)]
        if len(hits) == 1:
            return hits[0]
    return None


def read(cfg: DataConfig, scratch: Path) -> tuple[Path, Iterator[Row]]:
    files = csv_files(cfg)
    plans = []
    for path in files:
        split = split_of_name(path.name)
        if split is None:
            raise PrepError(f"{path}: cannot tell its split from the name; name it train*.csv or test*.csv")
        with _open(path) as f:
            header = next(csv.reader(f), None)
        cols = _columns(path, header)
        plans.append((path, split, cols, _image_dir(path, cols)))
    # Image paths are relative to the one image folder when all files share it, else to the files' common folder.
    folders = {(path.parent.resolve() / image_dir).resolve() for path, _, _, image_dir in plans}
    root = folders.pop() if len(folders) == 1 else Path(os.path.commonpath([p.parent.resolve() for p in files]))

    def rows() -> Iterator[Row]:
        for path, split, cols, image_dir in plans:
            folder = (path.parent.resolve() / image_dir).resolve()
            prefix = folder.relative_to(root).as_posix() if folder.is_relative_to(root) else "."
            with _open(path) as f:
                for number, row in enumerate(csv.DictReader(f), start=1):
                    parsed = parse_row(row, cols, number, split, path.stem, os.path.normpath(prefix))
                    parsed.file = path.name
                    yield parsed

    return root, rows()
