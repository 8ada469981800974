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


def target_completion(record: Record) -> str:
    """What SFT teaches: the reasoning (when the record has one) and the answer, in the paper's tags."""
    rationale = str(record.meta.get("rationale", "")).strip()
    return f"<think>{rationale}</think><answer>{record.answer}</answer>"
