"""Judge and evaluation settings: one settings class per backend, chosen by `backend` as an arm's is by `method`;
each backend's required settings are named when missing, another backend's are refused, bad values are named."""

import re

import pytest
import yaml
from pydantic import TypeAdapter

from medrl.config import (
    JUDGE_BACKENDS,
    JUDGE_CONFIGS,
    ConfigError,
    EmbeddingJudgeConfig,
    HFJudgeConfig,
    JudgeConfig,
    KeywordJudgeConfig,
    OpenAIJudgeConfig,
    StudyConfig,
    config_from_text,
    dump_config,
    load_config,
)
from medrl.judge import base
from medrl.kfp.parameters import parameter_overrides

STUDY = "arms: {zero-shot: {method: none}}\n"
SERVED = ["evaluate.judge.url=http://j:8000/v1", "evaluate.judge.model=m"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["judge.backend=gpt"], "judge.backend: unknown backend; choose one of: keyword, openai, hf, embedding"),
        (["judge.backend=null"], "judge.backend: unknown backend; choose one of: keyword, openai, hf, embedding"),
        (["judge=openai"], "judge: give a mapping of settings with its backend, e.g. {backend: keyword}"),
        (["judge.backend=openai", "judge.model=m"], "judge.url: required for judge.backend=openai"),
        (["judge.backend=openai", "judge.url=http://j:8000/v1"], "judge.model: required for judge.backend=openai"),
        (["evaluate.judge.backend=hf"], "evaluate.judge.model: required for evaluate.judge.backend=hf"),
        (["judge.backend=hf", "judge.model="], "judge.model: String should have at least 1 character"),
        (["judge.backend=openai", "judge.model=m", "judge.url=j:8000"], "judge.url: Value error, give an http://"),
        (["evaluate.judge.backend=openai", *SERVED, "evaluate.judge.timeout_s=0"], "evaluate.judge.timeout_s: Input"),
        (["evaluate.judge.backend=openai", *SERVED, "evaluate.judge.concurrency=0"], "evaluate.judge.concurrency: In"),
        (["evaluate.judge.backend=openai", *SERVED, "evaluate.judge.guided=json"], "evaluate.judge.guided: Input"),
        # a setting of another backend, named with the backends it belongs to
        (
            ["judge.url=http://j:8000/v1"],
            "judge.url: not a setting of backend keyword; it belongs to backend openai (got 'http://j:8000/v1') — "
            "remove it, or set judge.backend",
        ),
        (
            ["judge.model=m"],
            "judge.model: not a setting of backend keyword; it belongs to backend openai, hf, embedding",
        ),
        (
            ["evaluate.judge.backend=hf", "evaluate.judge.model=m", "evaluate.judge.concurrency=4"],
            "evaluate.judge.concurrency: not a setting of backend hf; it belongs to backend openai",
        ),
        (
            ["evaluate.judge.batch_size=4"],
            "evaluate.judge.batch_size: not a setting of backend keyword; it belongs to ",
        ),
        (["judge.tmeout_s=4"], "judge.tmeout_s: Extra inputs are not permitted (got 4) — not a known setting"),
        (["evaluate.similarity_kind=poly-encoder"], "evaluate.similarity_kind"),
        (["evaluate.bootstrap_samples=10"], "evaluate.bootstrap_samples"),
    ],
)
def test_bad_judge_and_evaluation_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
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
    assert isinstance(cfg.judge, KeywordJudgeConfig) and cfg.judge.max_unscorable_fraction == 0.2


def test_each_backend_holds_only_its_own_settings():
    """The resolved config (`medrl config`, a run's frozen config.yaml) shows a backend's settings and no other's,
    and reads back the same."""
    served = ["judge.backend=openai", "judge.url=http://j:8000/v1", "judge.model=BioMistral-7B"]
    cfg = load_config(preset="demo", overrides=[*served, "evaluate.judge.backend=hf", "evaluate.judge.model=biogpt"])
    dumped = yaml.safe_load(dump_config(cfg))
    assert dumped["judge"] == {
        "backend": "openai", "max_unscorable_fraction": 0.5, "cache_dir": None, "url": "http://j:8000/v1",
        "model": "BioMistral-7B", "endpoint": "chat", "guided": "structured_outputs",
        "api_key_env": "MEDRL_JUDGE_API_KEY", "timeout_s": 30.0, "concurrency": 16, "retries": 3, "backoff_s": 0.5,
        "max_backoff_s": 30.0, "breaker_failures": 5, "breaker_reset_s": 30.0,
    }  # fmt: skip
    assert dumped["evaluate"]["judge"] == {
        "backend": "hf", "max_unscorable_fraction": 0.5, "cache_dir": None, "batch_size": 8, "device": "auto",
        "trust_remote_code": False, "model": "biogpt",
    }  # fmt: skip
    assert yaml.safe_load(dump_config(load_config(preset="demo")))["judge"] == {
        "backend": "keyword", "max_unscorable_fraction": 0.5, "cache_dir": None
    }  # fmt: skip
    assert config_from_text(dump_config(cfg)) == cfg
    assert (type(cfg.judge), type(cfg.evaluate.judge)) == (OpenAIJudgeConfig, HFJudgeConfig)


def test_a_block_without_backend_is_the_keyword_judge():
    cfg = load_config(text=STUDY + "judge: {cache_dir: /cache}\nevaluate: {judge: {}}\n")
    assert isinstance(cfg.judge, KeywordJudgeConfig) and cfg.judge.cache_dir == "/cache"
    assert isinstance(cfg.evaluate.judge, KeywordJudgeConfig)
    assert EmbeddingJudgeConfig().model is None  # the packaged model


def test_switching_a_presets_backend_by_override():
    """paper-table1's judge is served (url, model): naming another backend over it names what that backend does not
    take; replacing the whole block works."""
    with pytest.raises(ConfigError) as err:
        load_config(preset="paper-table1", overrides=["judge.backend=keyword"])
    assert "judge.url: not a setting of backend keyword; it belongs to backend openai" in str(err.value)
    assert "judge.model: not a setting of backend keyword; it belongs to backend openai, hf, embedding" in str(
        err.value
    )
    assert isinstance(
        load_config(preset="paper-table1", overrides=["judge={backend: keyword}"]).judge, KeywordJudgeConfig
    )
    hf = load_config(preset="paper-table1", overrides=["judge={backend: hf, model: microsoft/biogpt, device: cpu}"])
    assert (hf.judge.backend, hf.judge.model, hf.judge.device) == ("hf", "microsoft/biogpt", "cpu")


def test_the_pipelines_judge_parameters_give_a_served_judge_for_both_blocks():
    cfg = load_config(
        preset="demo-full", overrides=parameter_overrides(judge_url="http://judge:8000/v1", judge_model="Mistral-7B")
    )
    for judge in (cfg.judge, cfg.evaluate.judge):
        assert isinstance(judge, OpenAIJudgeConfig) and (judge.url, judge.model) == (
            "http://judge:8000/v1",
            "Mistral-7B",
        )


def test_the_schema_lists_each_backends_settings():
    """The JSON schema of a study (what an editor or the Kubeflow UI can check a config with) is one object per
    backend, each with only its own settings."""
    schema = StudyConfig.model_json_schema()
    defs = schema["$defs"]
    shown = [defs[ref["$ref"].split("/")[-1]] for ref in schema["properties"]["judge"]["oneOf"]]
    assert [d["properties"]["backend"]["const"] for d in shown] == list(JUDGE_CONFIGS) == list(base.BACKENDS)
    assert set(defs["KeywordJudgeConfig"]["properties"]) == {"backend", "max_unscorable_fraction", "cache_dir"}
    assert {"url", "model", "timeout_s", "concurrency"} <= set(defs["OpenAIJudgeConfig"]["properties"])
    assert set(defs["OpenAIJudgeConfig"]["required"]) == {"url", "model"}
    assert "batch_size" not in defs["OpenAIJudgeConfig"]["properties"]
    assert defs["HFJudgeConfig"]["required"] == ["model"] and "url" not in defs["HFJudgeConfig"]["properties"]
    assert all(d["additionalProperties"] is False for d in shown)


@pytest.mark.parametrize("backend", JUDGE_BACKENDS)
def test_each_backend_name_picks_its_own_settings_class(backend):
    required = {"openai": {"url": "http://j:8000/v1", "model": "m"}, "hf": {"model": "m"}}.get(backend, {})
    judge = TypeAdapter(JudgeConfig).validate_python({"backend": backend, **required})
    assert type(judge) is JUDGE_CONFIGS[backend] and judge.backend == backend
