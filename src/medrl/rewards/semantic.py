"""Medical semantic alignment (paper, Sec. 3.2): a judge answers whether the reasoning inside <think> is
medically coherent and accurate. Yes -> 1.0, No -> 0.0, no verdict -> None (TRL leaves it out of the group
baseline and of the reward's mean), never 0: a judge's failure is not the policy's."""

from __future__ import annotations

from typing import Any

from medrl.errors import MedrlError
from medrl.judge.templates import semantic_prompt
from medrl.rewards.parse import completion_text, think_text


class UnscorableError(MedrlError, RuntimeError):
    """The judge gave no verdict for too many of the completions it was asked about in one step (or for none):
    training stops instead of learning from a reward that is missing."""


def _judged(completions: list[Any], judge: Any) -> tuple[list[float | None], int]:
    """The rewards, and how many completions the judge was asked about (those with reasoning)."""
    reasoning = [think_text(completion_text(c)) for c in completions]
    asked = [i for i, text in enumerate(reasoning) if text]
    verdicts = judge.yes_no([semantic_prompt(reasoning[i]) for i in asked]) if asked else []
    if len(verdicts) != len(asked):
        raise RuntimeError(f"judge {judge.name} returned {len(verdicts)} verdicts for {len(asked)} prompts")
    rewards: list[float | None] = [0.0] * len(completions)
    for i, verdict in zip(asked, verdicts, strict=True):
        rewards[i] = None if verdict is None else float(verdict)
    return rewards, len(asked)


def semantic_reward(completions: list[Any], judge: Any, **kwargs: Any) -> list[float | None]:
    """The judge's verdict on each completion's reasoning; None where the judge gave none. A completion without
    reasoning gets 0.0 without asking the judge: nothing to align is a failure of the policy, not of the judge.

    >>> from medrl.judge import KeywordJudge
    >>> semantic_reward(["<think>A mass in the left lung.</think>", "<think>ok</think>", "<answer>B</answer>"],
    ...                 judge=KeywordJudge())
    [1.0, 0.0, 0.0]
    """
    return _judged(completions, judge)[0]


def _explain(judge: Any) -> str:
    """Where the judge is and what went wrong with its last batch, with the fix (backends that can say)."""
    explain = getattr(judge, "explain", None)
    text = explain() if callable(explain) else ""
    return text or f"check that judge.backend / judge.model can answer (judge {judge.name})"


class SemanticReward:
    """`semantic_reward` bound to a judge, for TRL. Stops the run when the judge answers none of the completions
    it was asked about in one call (one generation batch of this process), or leaves more than
    `max_unscorable_fraction` of them without a verdict. Completions without reasoning are not asked and do not
    count: a dead judge cannot hide behind a policy that writes no reasoning."""

    def __init__(self, judge: Any, max_unscorable_fraction: float, name: str = "semantic"):
        self.judge = judge
        self.max_unscorable_fraction = max_unscorable_fraction
        self.__name__ = name  # TRL logs rewards/<name>/mean

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        rewards, asked = _judged(completions, self.judge)
        missing = sum(r is None for r in rewards)
        if not asked or not missing:
            return rewards
        limit = f"judge.max_unscorable_fraction={self.max_unscorable_fraction}"
        if missing == asked:
            raise UnscorableError(
                f"judge {self.judge.name} answered none of the {asked} completions it was asked about in this step; "
                f"{_explain(self.judge)}. Training stopped: without the judge the semantic reward is missing."
            )
        if missing / asked > self.max_unscorable_fraction:
            raise UnscorableError(
                f"judge {self.judge.name}: {missing} of {asked} completions it was asked about in this step got "
                f"no verdict (more than {limit}); {_explain(self.judge)}; or raise judge.max_unscorable_fraction."
            )
        return rewards
