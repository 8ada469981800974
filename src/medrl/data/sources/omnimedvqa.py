"""OmniMedVQA as downloaded: `QA_information/<access>/<dataset>.json` and `Images/<dataset>/...` in one folder.

Each question has two to four options (`option_A`..`option_D`) and its answer as text (`gt_answer`). The release
has no split, so `data.test_fraction` of the images (chosen by a hash of the image path) are held out for testing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.records import LETTERS, Record
from medrl.data.sources import PrepError, Row, fold, held_out, input_path, read_json_list, text

NAME = "omnimedvqa"
REQUIRED = ("question", "gt_answer", "image_path", "option_A", "option_B")
EXPECTED = (
    "a JSON list of objects with question_id, question, gt_answer, image_path, option_A..option_D, "
    "question_type, modality_type"
)


def read(cfg: DataConfig, scratch: Path) -> tuple[Path, Iterator[Row]]:
    root = input_path(cfg)
    if root.is_dir() and root.name == "QA_information":
        root = root.parent
    qa = root / "QA_information"
    files = sorted(qa.rglob("*.json")) if qa.is_dir() else []
    if not files:
        raise PrepError(
            f"--input {root}: no QA_information/**/*.json there; give the unzipped OmniMedVQA folder "
            "(the one holding QA_information/ and Images/)"
        )

    def rows() -> Iterator[Row]:
        for file in files:
            entries = read_json_list(file, EXPECTED, REQUIRED)
            name = file.relative_to(root).as_posix()
            access = file.parent.name if file.parent != qa else ""
            for number, entry in enumerate(entries, start=1):
                row = _row(entry, number, file.stem, access, cfg)
                row.file = name
                yield row

    return root, rows()


def _row(entry: object, number: int, stem: str, access: str, cfg: DataConfig) -> Row:
    if not isinstance(entry, dict) or any(entry.get(k) is None for k in ("question", "gt_answer", "image_path")):
        return Row(number, reason="row_malformed")
    options = [text(entry.get(f"option_{c}")) for c in "ABCD"]
    while options and not options[-1]:
        options.pop()
    if len(options) < 2 or any(not o for o in options) or len({fold(o) for o in options}) != len(options):
        return Row(number, reason="choices_invalid")
    answer = text(entry["gt_answer"])
    hits = [i for i, o in enumerate(options) if fold(o) == fold(answer)]
    if len(hits) != 1:
        return Row(number, reason="answer_empty" if not answer else "answer_not_in_choices")
    image = text(entry["image_path"])
    record = Record(
        id=f"{NAME}-{stem}-{number}",
        image=image,
        question=text(entry["question"]),
        choices=options,
        answer=options[hits[0]],
        answer_label=LETTERS[hits[0]],
        source=NAME,
        split="test" if held_out(image, cfg.test_fraction) else "train",
        meta={
            "answer_type": "closed",
            "modality": text(entry.get("modality_type") or entry.get("modality")),  # one file spells it `modality`
            "question_type": text(entry.get("question_type")),
            "dataset": text(entry.get("dataset")) or stem,
            "access": access,
            "question_id": text(entry.get("question_id")),
        },
    )
    return Row(number, record)
