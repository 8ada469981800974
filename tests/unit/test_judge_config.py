"""Judge and evaluation settings: each backend's required settings are named when missing, bad values are refused."""

import pytest

from medrl.config import ConfigError, load_config


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["judge.backend=gpt"], "judge.backend=gpt: unknown; choose one of: keyword, openai, hf, embedding"),
        (["judge.backend=openai", "judge.model=m"], "judge.url is required for judge.backend=openai"),
        (["judge.backend=openai", "judge.url=http://j:8000/v1"], "judge.model is required for judge.backend=openai"),
        (["evaluate.judge.backend=hf"], "judge.model is required for judge.backend=hf"),
        (["judge.backend=openai", "judge.model=m", "judge.url=j:8000"], "give an http:// or https:// URL"),
        (["evaluate.judge.timeout_s=0"], "evaluate.judge.timeout_s"),
        (["evaluate.judge.concurrency=0"], "evaluate.judge.concurrency"),
        (["evaluate.judge.guided=json"], "evaluate.judge.guided"),
        (["evaluate.similarity_kind=poly-encoder"], "evaluate.similarity_kind"),
        (["evaluate.bootstrap_samples=10"], "evaluate.bootstrap_samples"),
    ],
)
def test_bad_judge_and_evaluation_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(preset="demo", overrides=overrides)


def test_served_judge_settings():
    cfg = load_config(
        preset="demo",
        overrides=[
            "evaluate.judge.backend=openai",
            "evaluate.judge.url=http://judge.medrl.svc:8000/v1",
            "evaluate.judge.model=mistralai/Mistral-7B-Instruct-v0.2",
            "evaluate.judge.cache_dir=/cache/judge",
            "evaluate.perplexity_model=microsoft/biogpt",
            "evaluate.similarity_model=cross-encoder/stsb-roberta-base",
        ],
    )
    judge = cfg.evaluate.judge
    assert (judge.concurrency, judge.retries, judge.breaker_failures, judge.guided) == (16, 3, 5, "structured_outputs")
    assert cfg.judge.backend == "keyword"  # the training judge is its own setting
