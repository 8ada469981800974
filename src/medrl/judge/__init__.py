"""LLM judges behind one small interface: Yes/No verdicts (the semantic reward) and 1-10 scores (the
thinking reward). Backends live beside this module; `build_judge` picks one from the config."""

from medrl.judge.base import Judge, KeywordJudge, build_judge
from medrl.judge.templates import semantic_prompt, thinking_prompt

__all__ = ["Judge", "KeywordJudge", "build_judge", "semantic_prompt", "thinking_prompt"]
