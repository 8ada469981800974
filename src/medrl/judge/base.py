"""The judge interface and the deterministic local judge used where no model can run (tests, the demo).

A judge takes finished prompts (the templates fill them) and returns, per prompt, a verdict or None when
the reply could not be had or parsed: None is "unscorable", never a guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medrl.judge.cache import CachedJudge, VerdictCache

if TYPE_CHECKING:
    from medrl.config import EmbeddingJudgeConfig, HFJudgeConfig, JudgeConfig, OpenAIJudgeConfig


@runtime_checkable
class Judge(Protocol):
    name: str  # what produced the verdicts, e.g. "openai:BioMistral-7B"; shown in reports
    proxy: bool  # True when the backend stands in for the paper's model (named so in reports)

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        """Yes -> True, No -> False, unscorable -> None; one per prompt, in order."""
        ...

    def score(self, prompts: list[str]) -> list[int | None]:
        """An integer 1..10, or None; one per prompt, in order."""
        ...


class KeywordJudge:
    """A deterministic stand-in: says Yes when the judged text names a medical term from a fixed list.

    It is a stub of a clinical judge (no model can run in tests); reports name it as a proxy.
    """

    name = "keyword"
    proxy = True
    TERMS = re.compile(
        r"\b(lesion|tumou?r|mass|nodule|opacity|effusion|fracture|edema|consolidation|artery|vein|lung|liver|"
        r"heart|kidney|brain|ct|mri|x-ray|ultrasound|scan|image|region|left|right|upper|lower)\b",
        re.IGNORECASE,
    )

    def _judged(self, prompt: str) -> str:
        # The templates put the judged text between <<< and >>>; judge only that part.
        found = re.findall(r"<<<(.*?)>>>", prompt, re.DOTALL)
        return found[-1] if found else prompt

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        return [bool(self.TERMS.search(self._judged(p))) for p in prompts]

    def score(self, prompts: list[str]) -> list[int | None]:
        return [min(10, 1 + len(self.TERMS.findall(self._judged(p)))) for p in prompts]


def _openai(cfg: OpenAIJudgeConfig) -> Judge:
    from medrl.judge.openai import OpenAIJudge  # lazy: a backend's dependencies load only when it is used

    return OpenAIJudge(cfg)


def _hf(cfg: HFJudgeConfig) -> Judge:
    from medrl.judge.hf import HFJudge  # lazy: a backend's dependencies load only when it is used

    return HFJudge(cfg)


def _embedding(cfg: EmbeddingJudgeConfig) -> Judge:
    from medrl.judge.embedding import EmbeddingJudge  # lazy: a backend's dependencies load only when it is used

    return EmbeddingJudge(cfg)


# The builder of each backend of medrl.config.JudgeConfig (one settings class per backend there, chosen by `backend`).
BACKENDS: dict[str, Callable[[Any], Judge]] = {
    "keyword": lambda cfg: KeywordJudge(),
    "openai": _openai,
    "hf": _hf,
    "embedding": _embedding,
}


def build_judge(cfg: JudgeConfig) -> Judge:
    """The judge a config names, behind the verdict cache (in memory, and on disk with `cache_dir`)."""

    inner = BACKENDS[cfg.backend](cfg)  # JudgeConfig admits only backends of this table
    model = getattr(cfg, "model", None) or ""  # the keyword judge has none
    return CachedJudge(inner, cfg.backend, model, VerdictCache(cfg.cache_dir))
