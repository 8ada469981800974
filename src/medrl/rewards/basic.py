"""The rule-based rewards of DeepSeek-R1 style training: format and accuracy. TRL's reward contract:
`(completions, **dataset_columns) -> list[float | None]`, one value per completion.
"""

from __future__ import annotations

import re
from typing import Any

from medrl.rewards.parse import completion_text, is_correct

FORMAT_RE = re.compile(
    r"^\s*<think>(?:(?!</?think>|</?answer>).)*</think>\s*<answer>(?:(?!</?think>|</?answer>).)*</answer>\s*$",
    re.DOTALL,
)


def format_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """1.0 when the completion is <think>...</think> then <answer>...</answer>, each once, nothing around.

    >>> format_reward(["<think>a</think> <answer>B</answer>", "<answer>B</answer>"])
    [1.0, 0.0]
    """
    return [1.0 if FORMAT_RE.match(completion_text(c)) else 0.0 for c in completions]


def accuracy_reward(
    completions: list[Any], answer: list[str], choices: list[list[str]] | None = None, **kwargs: Any
) -> list[float]:
    """1.0 when the last <answer> names the reference option (by letter or text), or matches an open answer.

    >>> accuracy_reward(["<answer>B</answer>", "<answer>liver</answer>"], answer=["lung"] * 2,
    ...                 choices=[["liver", "lung"]] * 2)
    [1.0, 0.0]
    """
    choices = choices or [[] for _ in completions]
    return [
        1.0 if is_correct(completion_text(c), a, ch) else 0.0
        for c, a, ch in zip(completions, answer, choices, strict=True)
    ]
