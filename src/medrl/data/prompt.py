"""Prompts in the paper's form: the question, its options as `A: ...`, then the think/answer instruction."""

from __future__ import annotations

from typing import Any

from medrl.data.records import LETTERS, Record

DEFAULT_INSTRUCTION = "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."


def question_text(record: Record, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """>>> r = Record(id="1", question="Which organ?", choices=["Liver", "Lung"], answer="Lung")
    >>> question_text(r, "Think.")
    'Which organ? Choose between the following options: A: Liver, B: Lung. Think.'
    """
    text = record.question.strip()
    if record.choices:
        options = ", ".join(f"{LETTERS[i]}: {c}" for i, c in enumerate(record.choices))
        text = f"{text} Choose between the following options: {options}."
    return f"{text} {instruction}".strip()


def prompt_messages(record: Record, instruction: str = DEFAULT_INSTRUCTION) -> list[dict[str, Any]]:
    """A one-turn conversation; TRL inserts the image placeholders before the user's text."""
    return [{"role": "user", "content": question_text(record, instruction)}]


def target_completion(record: Record, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """What SFT teaches: the reasoning (when the record has one) and the answer, in the paper's tags."""
    if record.task != "vqa":
        return cxr_target(record, instruction)
    rationale = str(record.meta.get("rationale", "")).strip()
    return f"<think>{rationale}</think><answer>{record.answer}</answer>"


# Chest X-ray tasks: the sources write these questions into records; SFT targets follow the arm's instruction.
REPORT_QUESTION = "Write the findings and impression of the radiology report for this chest X-ray."


def grounding_question(phrase: str, scale: int = 1) -> str:
    """The grounding question for a phrase; it states the scale the boxes are to be answered in.

    >>> grounding_question("the left pleural effusion")[:52]
    'Locate the left pleural effusion in this chest X-ray'
    >>> grounding_question("a nodule", 1000).split(". ")[1]
    'Give each box as [x1, y1, x2, y2] with coordinates between 0 and 1000.'
    """
    return (
        f"Locate {phrase.strip().rstrip('.')} in this chest X-ray. "
        f"Give each box as [x1, y1, x2, y2] with coordinates between 0 and {scale}."
    )


def format_boxes(boxes: list[list[float]] | None, scale: int = 1) -> str:
    """Boxes (0..1) as the grounding reward parses them at `scale`: 2 decimals at scale 1, whole numbers at
    1000 (as Qwen-VL writes them); 'No box.' for none.

    >>> format_boxes([[0.1, 0.25, 0.5, 0.755], [0.6, 0.2, 0.9, 0.4]]), format_boxes([])
    ('[0.10, 0.25, 0.50, 0.76] [0.60, 0.20, 0.90, 0.40]', 'No box.')
    >>> format_boxes([[0.1, 0.25, 0.5, 0.7555]], 1000)
    '[100, 250, 500, 756]'
    """
    if not boxes:
        return "No box."
    if scale == 1:
        return " ".join("[" + ", ".join(f"{v:.2f}" for v in box) + "]" for box in boxes)
    return " ".join("[" + ", ".join(str(round(v * scale)) for v in box) + "]" for box in boxes)


def cxr_target(record: Record, instruction: str) -> str:
    """A report or grounding SFT target: the reasoning trace when the instruction asks for <think> (the
    cold-start "thinking" SFT), then the answer, in <answer> tags only when the instruction asks for them.

    >>> r = Record(id="1", question="q", answer="[0.10, 0.20, 0.30, 0.40]", task="grounding",
    ...            meta={"rationale": "Bright focus, left upper zone."})
    >>> cxr_target(r, "")
    '[0.10, 0.20, 0.30, 0.40]'
    >>> cxr_target(r, DEFAULT_INSTRUCTION)
    '<think>Bright focus, left upper zone.</think><answer>[0.10, 0.20, 0.30, 0.40]</answer>'
    >>> cxr_target(r, "Think inside <think> </think> first.")
    '<think>Bright focus, left upper zone.</think>[0.10, 0.20, 0.30, 0.40]'
    """
    answer = f"<answer>{record.answer}</answer>" if "<answer>" in instruction else record.answer
    if "<think>" in instruction:
        return f"<think>{str(record.meta.get('rationale', '')).strip()}</think>{answer}"
    return answer
