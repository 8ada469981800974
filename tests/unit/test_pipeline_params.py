"""The pipeline's named parameters become config overrides in the init step; empty keeps the preset's value."""

from __future__ import annotations

import pytest

from medrl.config import config_from_text
from medrl.infra import store
from medrl.pipeline import init_from_parameters, parameter_overrides


def test_named_parameters_become_overrides():
    out = parameter_overrides(
        overrides=["train.seed=3"], base_model="s3://models/qwen2-vl-2b", dataset_source="pmc-vqa",
        dataset_uri="s3://data/pmc-vqa", judge_url="http://medrl-judge.medrl.svc:8000/v1", judge_model="BioMistral-7B",
    )  # fmt: skip
    assert out == [
        "train.seed=3", "model.base=s3://models/qwen2-vl-2b", "data.source=pmc-vqa", "data.input=s3://data/pmc-vqa",
        "judge.backend=openai", "judge.url=http://medrl-judge.medrl.svc:8000/v1", "judge.model=BioMistral-7B",
        "evaluate.judge.backend=openai", "evaluate.judge.url=http://medrl-judge.medrl.svc:8000/v1",
        "evaluate.judge.model=BioMistral-7B",
    ]  # fmt: skip
    assert parameter_overrides() == []


def test_steps_sets_every_trained_arm_of_the_selection():
    out = parameter_overrides(preset="demo", arms="sft-grpo", steps=7)
    assert out == ["arms.sft.max_steps=7", "arms.sft-grpo.max_steps=7"]  # zero-shot trains nothing
    with pytest.raises(ValueError, match="steps=-1"):
        parameter_overrides(preset="demo", steps=-1)


def test_init_uses_the_sites_default_store_unless_given(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDRL_STORE", str(tmp_path / "site"))
    quick = {"preset": "demo", "arms": "zero-shot", "base_model": "org/model"}  # a hub id: no tiny model to build
    uri = init_from_parameters(run_id="r1", steps=5, overrides=["data.seed=2"], **quick)
    assert uri == store.normalize(str(tmp_path / "site")) + "/demo/r1"
    cfg = config_from_text(store.read_text(uri + "/config.yaml"))
    assert cfg.data.seed == 2 and list(cfg.arms) == ["zero-shot"] and cfg.model.base == "org/model"
    mine = init_from_parameters(run_id="r2", store=str(tmp_path / "mine"), **quick)
    assert mine.startswith(store.normalize(str(tmp_path / "mine")))
    theirs = init_from_parameters(run_id="r3", overrides=[f"store={tmp_path}/o"], **quick)
    assert theirs.startswith(store.normalize(f"{tmp_path}/o"))
