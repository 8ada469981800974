"""Medical semantic alignment (paper, Sec. 3.2): a judge answers whether the reasoning inside <think> is
medically coherent and accurate. Yes -> 1.0, No -> 0.0, no verdict -> None (TRL leaves it out)."""

from __future__ import annotations

from typing import Any

from medrl.errors import MedrlError
from medrl.judge.templates import semantic_prompt
from medrl.rewards.parse import completion_text, think_text


class UnscorableError(MedrlError, RuntimeError):
    """Too many completions of one step got no verdict from the judge: training stops instead of learning from
    a reward that is mostly missing."""


def semantic_reward(completions: list[Any], judge: Any, **kwargs: Any) -> list[float | None]:
    """The judge's verdict on each completion's reasoning. A completion without reasoning gets 0.0 without
    asking the judge: nothing to align is a failure of the policy, not of the judge.

    >>> from medrl.judge import KeywordJudge
    >>> semantic_reward(["<think>A mass in the left lung.</think>", "<think>ok</think>", "<answer>B</answer>"],
    ...                 judge=KeywordJudge())
    [1.0, 0.0, 0.0]
    """
    reasoning = [think_text(completion_text(c)) for c in completions]
    asked = [i for i, text in enumerate(reasoning) if text]
    verdicts = judge.yes_no([semantic_prompt(reasoning[i]) for i in asked]) if asked else []
    if len(verdicts) != len(asked):
        raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(asked)} prompts")
    rewards: list[float | None] = [0.0] * len(completions)
    for i, verdict in zip(asked, verdicts, strict=True):
        rewards[i] = None if verdict is None else float(verdict)
    return rewards


class SemanticReward:
    """`semantic_reward` bound to a judge, for TRL; stops the run when more than `max_unscorable_fraction` of one
    call's completions (one generation batch of this process) got no verdict."""

    def __init__(self, judge: Any, max_unscorable_fraction: float, name: str = "semantic"):
        self.judge = judge
        self.max_unscorable_fraction = max_unscorable_fraction
        self.__name__ = name  # TRL logs rewards/<name>/mean

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        rewards = semantic_reward(completions, self.judge)
        missing = sum(r is None for r in rewards)
        if rewards and missing / len(rewards) > self.max_unscorable_fraction:
            raise UnscorableError(
                f"judge {self.judge.name}: {missing} of {len(rewards)} completions of this step could not be judged "
                f"(more than judge.max_unscorable_fraction={self.max_unscorable_fraction}); check that the judge "
                "server answers (judge.url, judge.model) or raise judge.max_unscorable_fraction"
            )
        return rewards
