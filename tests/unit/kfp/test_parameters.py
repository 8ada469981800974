"""The pipeline's parameters: one table (`medrl.kfp.parameters.PARAMETERS`) that the compiled pipeline, its init and
train components, `pipeline submit --param` and the launcher's TrainSpec agree with; the named parameters become
config overrides in the init step, empty keeping the preset's value."""

from __future__ import annotations

import inspect
import json
from dataclasses import fields

import pytest
import yaml

from medrl import store
from medrl.cluster.launch import TrainSpec
from medrl.components.start import init_run
from medrl.components.train import train
from medrl.config import config_from_text
from medrl.kfp import client
from medrl.kfp.parameters import (
    CLUSTER_PARAMETERS,
    DEFAULT_IMAGE,
    PARAMETERS,
    STUDY_PARAMETERS,
    packaged_pipeline,
    parameter_overrides,
)
from medrl.study import init_from_parameters

KFP_TYPES = {str: "STRING", int: "NUMBER_INTEGER", list: "LIST", dict: "STRUCT"}


def test_the_shipped_pipeline_has_the_tables_parameters():
    spec = next(yaml.safe_load_all(packaged_pipeline().read_text()))
    compiled = spec["root"]["inputDefinitions"]["parameters"]
    assert list(compiled) == sorted(p.name for p in PARAMETERS)  # nothing more, nothing less
    for p in PARAMETERS:
        assert compiled[p.name]["parameterType"] == KFP_TYPES[p.type], p.name
        assert compiled[p.name]["defaultValue"] == p.default, p.name
        assert compiled[p.name]["description"] == p.help, p.name
    assert compiled["image"]["defaultValue"] == DEFAULT_IMAGE


def inputs(component) -> dict[str, type]:
    return {name: q.annotation for name, q in inspect.signature(component.python_func).parameters.items()}


def test_components_take_the_tables_parameters():
    assert inputs(init_run) == {p.name: p.type for p in STUDY_PARAMETERS}
    cluster = {p.name: p.type for p in CLUSTER_PARAMETERS}
    assert inputs(train) == {"run_uri": str, "arm": str, "pipeline_run": str, **cluster}
    # init forwards its inputs as they are: the core takes every study parameter by name.
    takes = set(inspect.signature(init_from_parameters).parameters) | set(
        inspect.signature(parameter_overrides).parameters
    )
    assert takes - {"named", "params"} == {p.name for p in STUDY_PARAMETERS}


def test_train_spec_takes_the_cluster_parameters_with_the_same_defaults():
    spec_defaults = {
        f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(TrainSpec)
    }
    for p in CLUSTER_PARAMETERS:
        if p.name != "launcher":  # chooses the backend; not a setting of the job
            assert spec_defaults[p.name] == p.default, p.name
    settings = {p.name: p.default for p in CLUSTER_PARAMETERS if p.name != "launcher"}
    spec = TrainSpec.from_params("file:///runs/r", "sft", {**settings, "pipeline_run": "kfp-1"})
    assert spec == TrainSpec("file:///runs/r", "sft", pipeline_run="kfp-1")
    # a setting a user changes in the Kubeflow UI reaches the pods: the restart budget as their environment
    patient = TrainSpec.from_params("file:///runs/r", "sft", {**settings, "attempts_without_progress": 5})
    assert patient.restart_env() == {"MEDRL_ATTEMPTS_WITHOUT_PROGRESS": "5"}
    # k8s/components/trainer's runtime is chosen by a pipeline parameter (without it every pipeline TrainJob
    # referenced Trainer's stock runtime: no metrics port, no restart budget)
    assert client.arguments(packaged_pipeline(), ["training_runtime=medrl-torch-distributed"]) == {
        "training_runtime": "medrl-torch-distributed"
    }
    assert TrainSpec.from_params(
        "file:///runs/r", "sft", {**settings, "training_runtime": "medrl-torch-distributed"}
    ) == (TrainSpec("file:///runs/r", "sft", training_runtime="medrl-torch-distributed"))


@pytest.mark.parametrize("param", PARAMETERS, ids=lambda p: p.name)
def test_submit_param_is_typed_as_the_table_says(param):
    raw = json.dumps(param.default) if param.type in (list, dict) else str(param.default)
    assert client.arguments(packaged_pipeline(), [f"{param.name}={raw}"]) == {param.name: param.default}
    if param.type is int:
        with pytest.raises(client.KubeflowError, match=f"{param.name} takes an integer"):
            client.arguments(packaged_pipeline(), [f"{param.name}=many"])


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
    assert parameter_overrides(mlflow_uri="http://mlflow.mlops.svc:5000") == [
        "tracking.mlflow_uri=http://mlflow.mlops.svc:5000"
    ]


def test_steps_sets_every_trained_arm_of_the_selection():
    out = parameter_overrides(preset="demo", arms="sft-grpo", steps=7)
    assert out == ["arms.sft.max_steps=7", "arms.sft-grpo.max_steps=7"]  # zero-shot trains nothing
    with pytest.raises(ValueError, match="steps=-1"):
        parameter_overrides(preset="demo", steps=-1)


def test_init_takes_every_study_parameter_at_its_pipeline_default(tmp_path):
    given = {p.name: p.default for p in STUDY_PARAMETERS}  # what the init component passes, UI left alone
    given |= {"store": str(tmp_path), "run_id": "r0", "arms": "zero-shot", "base_model": "org/model"}
    uri = init_from_parameters(**given)
    assert uri == store.normalize(str(tmp_path)) + "/demo/r0"
    assert config_from_text(store.read_text(uri + "/config.yaml")).model.base == "org/model"


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


def test_gpu_training_with_evaluation_left_on_the_cpu_is_refused():
    with pytest.raises(client.KubeflowError, match=r"gpus_per_node=4 trains on GPUs but eval_gpus is left at 0"):
        client.arguments(packaged_pipeline(), ["gpus_per_node=4"])
    assert client.arguments(packaged_pipeline(), ["gpus_per_node=4", "eval_gpus=1"])["eval_gpus"] == 1
    assert client.arguments(packaged_pipeline(), ["gpus_per_node=4", "eval_gpus=0"])["eval_gpus"] == 0  # meant
