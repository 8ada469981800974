"""`medrl pipeline submit|schedule|runs` through the real kfp.Client against a STUB of the Kubeflow Pipelines API
(tests/support/standins.py, in-memory experiments/runs/recurring runs on loopback) that records every request: the cron,
concurrency, catch-up and typed parameters that reach the server are checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from medrl.cli import app
from medrl.kfp import client
from medrl.kfp.parameters import packaged_pipeline
from tests.support.standins import KfpStandIn

PACKAGE = packaged_pipeline()  # what `pipeline submit|schedule` send without --package


@pytest.fixture()
def kfp_api(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # kfp.Client keeps a context file under ~/.config/kfp
    with KfpStandIn() as api:
        yield api


def medrl(*args, home):
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "medrl", *args], capture_output=True, text=True, timeout=120, env=env)


def posted(api, path):
    return [r["body"] for r in api.requests if r["method"] == "POST" and r["path"] == path]


def test_submit_sends_the_package_and_typed_parameters_into_an_experiment(kfp_api, tmp_path):
    out = medrl(
        "pipeline", "submit", "--host", kfp_api.url, "--preset", "paper-table1", "--experiment", "weekly",
        "--param", "gpus_per_node=4", "--param", "eval_gpus=1",
        "--param", 'node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}',
        "--param", 'tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]', "--param", "store=s3://medrl/runs",
        "train.learning_rate=1e-5", home=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    (experiment,) = posted(kfp_api, "/apis/v2beta1/experiments")
    assert experiment["display_name"] == "weekly"
    (run,) = posted(kfp_api, "/apis/v2beta1/runs")
    assert run["experiment_id"] == kfp_api.experiments[0]["experiment_id"]
    assert run["pipeline_spec"]["pipeline_spec"] == next(yaml.safe_load_all(PACKAGE.read_text()))
    params = run["runtime_config"]["parameters"]
    assert params == {
        "preset": "paper-table1",
        "gpus_per_node": 4,
        "eval_gpus": 1,
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        "store": "s3://medrl/runs",
        "overrides": ["train.learning_rate=1e-5"],
    }
    assert kfp_api.runs[0]["run_id"] in out.stdout and "/#/runs/details/" in out.stdout


def test_schedule_sends_cron_concurrency_and_catchup(kfp_api):
    job = client.schedule(
        kfp_api.url, PACKAGE, client.arguments(PACKAGE, ["steps=1500"], "paper-table1"), "0  0 2 * * 0",
        experiment="weekly", max_concurrency=2, catchup=False,
    )  # fmt: skip
    (body,) = posted(kfp_api, "/apis/v2beta1/recurringruns")
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 2 * * 0"}}
    assert int(body["max_concurrency"]) == 2 and body["no_catchup"] is True and body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"preset": "paper-table1", "steps": 1500}
    assert body["experiment_id"] == kfp_api.experiments[0]["experiment_id"]
    assert job["recurring_run_id"] == kfp_api.recurring[0]["recurring_run_id"]
    client.schedule(kfp_api.url, PACKAGE, {}, "@weekly")  # catch-up is Kubeflow's default
    assert posted(kfp_api, "/apis/v2beta1/recurringruns")[1]["no_catchup"] is False


def test_bad_schedule_input_exits_2_naming_the_option_and_sends_nothing(kfp_api, tmp_path):
    out = medrl("pipeline", "schedule", "--host", kfp_api.url, "--cron", "0 2 * * 0", home=tmp_path)
    assert out.returncode == 2 and "has 5 fields" in out.stderr and "--cron '0 0 2 * * 0'" in out.stderr
    out = medrl("pipeline", "schedule", "--host", kfp_api.url, "--cron", "0 0 2 * * 0", "--max-concurrency", "11",
                home=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "--max-concurrency 11: must be within 1-10" in out.stderr
    # A fixed run id would make every scheduled run resume the first one's folder: nothing new after week one.
    out = medrl("pipeline", "schedule", "--host", kfp_api.url, "--cron", "@weekly", "--param", "run_id=weekly",
                home=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "--param run_id=weekly: every scheduled run would resume" in out.stderr
    out = medrl("pipeline", "submit", "--host", kfp_api.url, "--param", "gpus=4", home=tmp_path)
    assert out.returncode == 2 and "--param gpus: the pipeline has no such parameter" in out.stderr
    assert "Traceback" not in out.stderr and kfp_api.requests == []


def test_an_unreachable_server_is_named_with_the_fix(tmp_path):
    with KfpStandIn() as gone:
        url = gone.url
    with pytest.raises(client.KubeflowError, match=rf"--host {url}: the Kubeflow Pipelines API failed.*port-forward"):
        client.submit(url, PACKAGE, {})


def test_runs_lists_newest_first(kfp_api, capsys):
    for preset in ("demo", "paper-table1"):
        client.submit(kfp_api.url, PACKAGE, {"preset": preset}, experiment="medrl", run_name=f"run {preset}")
    rows = client.runs(kfp_api.url, experiment="medrl")
    assert [r["name"] for r in rows] == ["run paper-table1", "run demo"]
    assert {r["state"] for r in rows} == {"PENDING"} and all(r["created"] == "2026-11-22 01:00:00" for r in rows)
    out = CliRunner().invoke(app, ["pipeline", "runs", "--host", kfp_api.url, "--experiment", "medrl"])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0].split()[:3] == ["RUN", "ID", "STATE"] and lines[1].endswith("run paper-table1")


def test_runs_of_a_profile_namespace_are_listed_in_it(kfp_api):
    """Multi-user Kubeflow lists runs only within a namespace: without --experiment, --namespace must reach it."""
    kfp_api.multi_user = True
    client.submit(kfp_api.url, PACKAGE, {"preset": "demo"}, experiment="medrl", run_name="run demo", namespace="alice")
    rows = client.runs(kfp_api.url, namespace="alice")
    assert [r["name"] for r in rows] == ["run demo"]
    (listing,) = [r for r in kfp_api.requests if r["method"] == "GET" and r["path"] == "/apis/v2beta1/runs"]
    assert listing["query"]["namespace"] == ["alice"]


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 0 2 * *", "has 5 fields"),
        ("0 0 2 * * 0 2026", "give 6 fields"),
        ("60 0 2 * * 0", "seconds must be within 0-59"),
        ("0 0 24 * * 0", "hours must be within 0-23"),
        ("0 0 2 0 * 0", "day of month must be within 1-31"),
        ("0 0 2 * 13 0", "month must be within 1-12"),
        ("0 0 2 * * 7", "day of week must be within 0-6"),
        ("0 */0 * * * *", "step '0' must be a positive number"),
        ("0 30-10 * * * *", "runs backwards"),
        ("? 0 2 * * *", "'?' is allowed only"),
        ("0 0 2 * * x", "has 'x', not a number"),
    ],
)
def test_cron_validation_names_the_field(cron, message):
    with pytest.raises(client.KubeflowError, match=message.replace("*", r"\*").replace("?", r"\?")):
        client.validate_cron(cron)


@pytest.mark.parametrize("cron", ["0 0 2 * * 0", "0 */15 8-18 ? * MON-FRI", "0 0 0 1 JAN,JUL *", "@every 24h"])
def test_valid_crons_pass(cron):
    assert client.validate_cron(cron) == cron


def test_parameters_are_typed_by_the_package():
    args = client.arguments(PACKAGE, ["nodes=2", "arms=sft,grpo", 'overrides=["a.b=1"]'], None, ["c.d=2"])
    assert args == {"nodes": 2, "arms": "sft,grpo", "overrides": ["a.b=1", "c.d=2"]}
    with pytest.raises(client.KubeflowError, match="nodes takes an integer"):
        client.arguments(PACKAGE, ["nodes=two"])
    with pytest.raises(client.KubeflowError, match="node_selector takes a JSON object"):
        client.arguments(PACKAGE, ["node_selector=[1]"])
