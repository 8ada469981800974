"""The study pipeline with `launcher=trainjob`: compiled by medrl.pipelines.compile (real kfp compiler),
the parameter reaches the train step and the exit handler's cleanup, and a run submitted through the real
kfp.Client to the STUB of the Kubeflow Pipelines API (tests/support/standins.py) carries it."""

from __future__ import annotations

import pytest
import yaml

from medrl.kfp import client
from medrl.pipelines.compile import compile_pipeline
from tests.support.standins import KfpStandIn


def tasks_taking(spec: dict, param: str) -> dict[str, str]:
    """Every task, at any depth of the pipeline's DAGs, that takes `param`, with what it is bound to."""
    found = {}
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    for dag in dags:
        for name, task in dag["tasks"].items():
            source = task.get("inputs", {}).get("parameters", {}).get(param)
            if source:
                found[name] = source.get("componentInputParameter", "")
    return found


@pytest.fixture()
def kfp_api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client keeps a context file under ~/.config/kfp
    with KfpStandIn() as api:
        yield api


def test_the_pipeline_compiled_with_launcher_trainjob(tmp_path, kfp_api):
    package = compile_pipeline(tmp_path / "study.yaml")
    spec = next(yaml.safe_load_all(package.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["launcher"]["parameterType"] == "STRING"
    bound = tasks_taking(spec, "launcher")
    assert any(name.startswith("train") for name in bound) and any(name.startswith("cleanup") for name in bound)
    assert all(source.endswith("launcher") for source in bound.values()), bound  # from the pipeline's parameter

    args = client.arguments(package, ["launcher=trainjob", "gpus_per_node=4", "eval_gpus=1"], preset="paper-table1")
    client.submit(kfp_api.url, package, args)
    (run,) = kfp_api.runs
    assert run["runtime_config"]["parameters"]["launcher"] == "trainjob"
