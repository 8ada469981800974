"""Thinking reward (Appendix B.3): the judge scores each reasoning 1-10 given the question and reference answer
(the paper: Mistral-7B-Instruct). Unscorable replies stay None and make the metric incomplete."""

from __future__ import annotations

from medrl.judge.base import Judge
from medrl.judge.templates import thinking_prompt

PAPER_MODEL = "mistralai/Mistral-7B-Instruct"
CHUNK = 256  # prompts per judge call: progress in the log, bounded memory


def thinking_rewards(
    judge: Judge, questions: list[str], references: list[str], reasonings: list[str]
) -> list[int | None]:
    prompts = [thinking_prompt(q, r, t) for q, r, t in zip(questions, references, reasonings, strict=True)]
    scores: list[int | None] = []
    for start in range(0, len(prompts), CHUNK):
        scores.extend(judge.score(prompts[start : start + CHUNK]))
    return scores


def is_paper_judge(name: str) -> bool:
    return "mistral-7b-instruct" in name.lower()
