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


def grounding_question(phrase: str) -> str:
    """The grounding question for a phrase.

    >>> grounding_question("the left pleural effusion")[:52]
    'Locate the left pleural effusion in this chest X-ray'
    """
    return (
        f"Locate {phrase.strip().rstrip('.')} in this chest X-ray. "
        "Give each box as [x1, y1, x2, y2] with coordinates between 0 and 1."
    )


def format_boxes(boxes: list[list[float]] | None) -> str:
    """Boxes as the grounding reward parses them; 'No box.' for none.

    >>> format_boxes([[0.1, 0.25, 0.5, 0.755], [0.6, 0.2, 0.9, 0.4]]), format_boxes([])
    ('[0.10, 0.25, 0.50, 0.76] [0.60, 0.20, 0.90, 0.40]', 'No box.')
    """
    if not boxes:
        return "No box."
    return " ".join("[" + ", ".join(f"{v:.2f}" for v in box) + "]" for box in boxes)


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
