"""Length rewards (paper, Sec. 3.3): ECR pays for longer reasoning; CWR pays for it only when the answer is
right. Length is counted in whitespace-separated words inside <think>, so it needs no tokenizer."""

from __future__ import annotations

from typing import Any

from medrl.rewards.parse import completion_text, is_correct, think_text

DEFAULT_CAP = 256


def reasoning_words(completion: Any) -> int:
    """Words of the reasoning inside <think>.

    >>> reasoning_words("<think>the lesion is left</think><answer>A</answer>")
    4
    """
    return len(think_text(completion_text(completion)).split())


def ecr_reward(completions: list[Any], cap: int = DEFAULT_CAP, **kwargs: Any) -> list[float]:
    """Extended Chain Reward: min(words of reasoning, cap) / cap, from 0.0 (no reasoning) to 1.0 (cap or more).

    >>> ecr_reward(["<think>one two</think><answer>A</answer>", "<think>" + "w " * 9 + "</think>", "A"], cap=4)
    [0.5, 1.0, 0.0]
    """
    if cap < 1:
        raise ValueError(f"ecr cap={cap}: the cap is a number of words, at least 1")
    return [min(reasoning_words(c), cap) / cap for c in completions]


def cwr_reward(
    completions: list[Any],
    answer: list[str],
    choices: list[list[str]] | None = None,
    cap: int = DEFAULT_CAP,
    **kwargs: Any,
) -> list[float]:
    """Correctness-Weighted length Reward: the ECR value when the last <answer> is correct, else 0.0.

    >>> cwr_reward(["<think>a b</think><answer>B</answer>", "<think>a b</think><answer>A</answer>"],
    ...            answer=["lung"] * 2, choices=[["liver", "lung"]] * 2, cap=4)
    [0.5, 0.0]
    """
    choices = choices or [[] for _ in completions]
    lengths = ecr_reward(completions, cap=cap)
    return [
        length if is_correct(completion_text(c), a, ch) else 0.0
        for c, a, ch, length in zip(completions, answer, choices, lengths, strict=True)
    ]
