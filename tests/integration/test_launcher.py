"""Training an arm as a PyTorchJob, through the real kubeflow-training SDK and kubernetes client, against a STUB
of the Kubernetes API server and training operator (tests/support/standins.py: it runs the Master's `pytorch` container
command as a local process with the operator's PET_* environment, streams its log and reports conditions). The
container command is the real `medrl train-arm` entrypoint training the tiny model into a file:// store."""

from __future__ import annotations

import pytest

from medrl import store
from medrl.cluster.launch import LaunchError, TrainSpec, cleanup, launch_arm
from medrl.cluster.pytorchjob import PyTorchJobLauncher
from medrl.study import init_run, load_run
from tests.support.standins import kube_for_launcher
from tests.support.tiny_runs import small_sft_run

FAST = {"poll_seconds": 0.2, "image": "registry.test/medrl:1", "namespace": "medrl"}


@pytest.fixture()
def kube(tmp_path, monkeypatch):
    with kube_for_launcher(tmp_path, monkeypatch) as standin:
        yield standin


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory):
    return small_sft_run(tmp_path_factory.mktemp("runs"), "launch")


@pytest.mark.slow
def test_arm_trains_as_a_pytorchjob_and_the_job_is_deleted(kube, run_uri, capsys):
    model = launch_arm(run_uri, "sft", launcher="pytorchjob", params={**FAST, "pipeline_run": "kfp-run-1"})

    run, _ = load_run(run_uri)
    assert model == run.arm("sft").model and store.is_committed(model)
    posted = [r["body"] for r in kube.requests if r["method"] == "POST" and r["path"].endswith("/pytorchjobs")]
    assert len(posted) == 1
    job = posted[0]
    assert job["metadata"]["namespace"] == "medrl" and job["metadata"]["labels"]["medrl.io/pipeline-run"] == "kfp-run-1"
    container = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == "pytorch" and container["image"] == "registry.test/medrl:1"
    assert container["command"] == ["medrl", "train-arm", "--run", run_uri, "--arm", "sft"]
    # The container saw the operator's environment and trained in place (one process: no torchrun).
    (_command, env), *_ = kube.commands
    assert env["PET_NNODES"] == "1" and env["PET_NPROC_PER_NODE"] == "1" and env["MEDRL_DEEPSPEED"] == "none"
    # The master's log was streamed to this task's output, and the job deleted once it succeeded.
    assert f"[Pod {job['metadata']['name']}-master-0]" in capsys.readouterr().out
    assert kube.deleted == [job["metadata"]["name"]] and not kube.jobs


@pytest.mark.slow
def test_a_committed_or_untrained_arm_submits_nothing(kube, run_uri):
    launch_arm(run_uri, "sft", launcher="pytorchjob", params=FAST)  # committed by the test above, or now
    before = len(kube.requests)
    launch_arm(run_uri, "sft", launcher="pytorchjob", params=FAST)
    assert len(kube.requests) == before


def test_a_failed_job_raises_naming_it_and_is_deleted(kube, tmp_path):
    kube.exit_code = 1  # the training container exits 1: a bug, which ExitCode does not retry
    uri = init_run(preset="demo", store_uri=str(tmp_path / "runs"), run_id="fails", arms=["sft"])
    spec = TrainSpec.from_params(uri, "sft", FAST)
    with pytest.raises(LaunchError, match=rf"PyTorchJob medrl/{spec.job_name} did not succeed"):
        launch_arm(uri, "sft", launcher="pytorchjob", params=FAST)
    assert kube.deleted == [spec.job_name]


def test_a_retried_task_follows_the_job_it_started(kube, tmp_path):
    kube.start_jobs = False  # the job stays Created: nothing finishes while we look
    spec = TrainSpec.from_params("file:///runs/x", "grpo", FAST)
    PyTorchJobLauncher().submit(spec)
    PyTorchJobLauncher().submit(spec)  # the same run and arm: 409, then follow the existing job
    posts = [r for r in kube.requests if r["method"] == "POST"]
    assert len(posts) == 2 and len(kube.jobs) == 1 and kube.deleted == []


def test_a_retried_task_restarts_a_job_that_failed(kube):
    kube.start_jobs = False
    spec = TrainSpec.from_params("file:///runs/x", "grpo", FAST)
    PyTorchJobLauncher().submit(spec)
    kube.jobs[("medrl", spec.job_name)].conditions.append({"type": "Failed", "status": "True"})
    PyTorchJobLauncher().submit(spec)
    assert kube.deleted == [spec.job_name]
    assert ("medrl", spec.job_name) in kube.jobs and kube.jobs[("medrl", spec.job_name)].conditions[-1][
        "type"
    ] == "Created"


def test_exit_handler_deletes_only_the_jobs_of_its_run(kube):
    kube.start_jobs = False
    for arm, run in (("sft", "run-a"), ("grpo", "run-a"), ("sft", "run-b")):
        PyTorchJobLauncher().submit(TrainSpec.from_params(f"file:///runs/{run}", arm, {**FAST, "pipeline_run": run}))
    deleted = cleanup("run-a", "medrl", launcher="pytorchjob")
    assert len(deleted) == 2 and sorted(deleted) == sorted(kube.deleted)
    left = [job.body["metadata"]["labels"]["medrl.io/pipeline-run"] for job in kube.jobs.values()]
    assert left == ["run-b"]
    assert cleanup("run-a", "medrl", launcher="inprocess") == []  # locally there is nothing to delete
