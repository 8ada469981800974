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
            "evaluate.judge.concurrency=4",
            "evaluate.judge.timeout_s=12.5",
            "evaluate.judge.guided=guided_choice",
            "evaluate.perplexity_model=microsoft/biogpt",
            "evaluate.similarity_model=cross-encoder/stsb-roberta-base",
            "judge.max_unscorable_fraction=0.2",
        ],
    )
    judge = cfg.evaluate.judge
    assert (judge.backend, judge.url, judge.model, judge.cache_dir) == (
        "openai",
        "http://judge.medrl.svc:8000/v1",
        "mistralai/Mistral-7B-Instruct-v0.2",
        "/cache/judge",
    )
    assert (judge.concurrency, judge.timeout_s, judge.guided) == (4, 12.5, "guided_choice")
    assert (judge.retries, judge.breaker_failures, judge.endpoint) == (3, 5, "chat")  # not set: the defaults
    assert cfg.evaluate.perplexity_model == "microsoft/biogpt"
    assert cfg.evaluate.similarity_model == "cross-encoder/stsb-roberta-base"
    # the training judge is its own block: only what was set there changes
    assert (cfg.judge.backend, cfg.judge.url, cfg.judge.max_unscorable_fraction) == ("keyword", None, 0.2)
