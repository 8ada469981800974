"""Training an arm as a Kubeflow Trainer v2 TrainJob, through the real kubernetes client, against a STUB of the
Kubernetes API server with Trainer and a kubelet behind it (tests/support/standins.py: it serves the upstream v2.3.0
`torch-distributed` runtime, runs the `node` container's command as a local process with the torch plugin's PET_*
environment, streams its log, and reports the TrainJob's conditions and events). The command is the real
`medrl train-arm` entrypoint training the tiny model into a file:// store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from medrl import store
from medrl.cluster.launch import LaunchError, TrainSpec, cleanup, launch_arm, resolve
from medrl.cluster.trainjob import TrainJobLauncher, build_runtime
from medrl.study import init_run, load_run
from tests.support.standins import kube_for_launcher
from tests.support.tiny_runs import small_sft_run

FAST = {"poll_seconds": 0.2, "image": "registry.test/medrl:1", "namespace": "medrl"}
STOCK = yaml.safe_load((Path(__file__).parents[1] / "data" / "trainer-v2.3.0" / "torch_distributed.yaml").read_text())


@pytest.fixture()
def kube(tmp_path, monkeypatch):
    with kube_for_launcher(tmp_path, monkeypatch) as standin:
        standin.trainer_crd = True
        standin.runtimes[("ClusterTrainingRuntime", "", "torch-distributed")] = STOCK
        yield standin


@pytest.fixture(scope="module")
def run_uri(tmp_path_factory):
    return small_sft_run(tmp_path_factory.mktemp("runs"), "trainjob")


def posts(kube) -> list[dict]:
    return [r["body"] for r in kube.requests if r["method"] == "POST" and r["path"].endswith("/trainjobs")]


@pytest.mark.slow
def test_arm_trains_as_a_trainjob_and_the_job_is_deleted(kube, run_uri, capsys):
    model = launch_arm(run_uri, "sft", launcher="trainjob", params={**FAST, "pipeline_run": "kfp-run-1"})

    run, _ = load_run(run_uri)
    assert model == run.arm("sft").model and store.is_committed(model)
    (job,) = posts(kube)
    assert job["metadata"]["labels"]["medrl.io/pipeline-run"] == "kfp-run-1"
    assert job["spec"]["runtimeRef"] == {"apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime",
                                         "name": "torch-distributed"}  # fmt: skip
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == "registry.test/medrl:1"
    assert trainer["command"] == ["medrl", "train-arm", "--run", run_uri, "--arm", "sft"]
    # The node container saw the torch plugin's environment and trained in place (one process: no torchrun).
    (_command, env), *_ = kube.commands
    assert env["PET_NNODES"] == "1" and env["PET_NPROC_PER_NODE"] == "1" and env["MEDRL_DEEPSPEED"] == "none"
    # Rank 0's log was streamed to this task's output, and the job deleted once it completed.
    assert f"[Pod {job['metadata']['name']}-node-0-0-x7k2p]" in capsys.readouterr().out
    assert kube.deleted == [job["metadata"]["name"]] and not kube.trainjobs


def test_a_failed_job_raises_with_its_condition_and_events_and_is_deleted(kube, tmp_path):
    kube.exit_code = 1
    uri = init_run(preset="demo", store_uri=str(tmp_path / "runs"), run_id="fails", arms=["sft"])
    spec = TrainSpec.from_params(uri, "sft", FAST)
    with pytest.raises(LaunchError) as failed:
        launch_arm(uri, "sft", launcher="trainjob", params=FAST)
    message = str(failed.value)
    assert f"TrainJob medrl/{spec.job_name} did not succeed: Failed FailedJobs" in message
    assert f"Warning Pod/{spec.job_name}-node-0-0-x7k2p BackOff: container node exited with 1" in message
    assert kube.deleted == [spec.job_name]


def test_a_restarted_launcher_finds_and_follows_the_existing_job(kube, capsys):
    kube.start_jobs = False  # the job stays pending while the first launcher "dies"
    spec = TrainSpec.from_params("file:///runs/x", "grpo", FAST)
    TrainJobLauncher().submit(spec)
    handle = TrainJobLauncher().submit(spec)  # a new launcher process: 409, then follow the job it finds
    assert len(posts(kube)) == 2 and len(kube.trainjobs) == 1 and kube.deleted == []

    kube.exit_code = 0  # the pod starts now and its container exits 0
    threading.Timer(0.3, kube.trainjobs[("medrl", spec.job_name)].start).start()
    handle.wait()
    assert f"[Pod {spec.job_name}-node-0-0-x7k2p]: training failed on purpose" in capsys.readouterr().out
    assert kube.deleted == []


def test_a_retried_task_restarts_a_job_that_failed(kube):
    kube.start_jobs = False
    spec = TrainSpec.from_params("file:///runs/x", "grpo", FAST)
    TrainJobLauncher().submit(spec)
    kube.trainjobs[("medrl", spec.job_name)].conditions.append({"type": "Failed", "status": "True"})
    TrainJobLauncher().submit(spec)
    assert kube.deleted == [spec.job_name]
    assert kube.trainjobs[("medrl", spec.job_name)].conditions == []  # a new job


def test_exit_handler_deletes_only_the_trainjobs_of_its_run(kube):
    kube.start_jobs = False
    for arm, run in (("sft", "run-a"), ("grpo", "run-a"), ("sft", "run-b")):
        TrainJobLauncher().submit(TrainSpec.from_params(f"file:///runs/{run}", arm, {**FAST, "pipeline_run": run}))
    deleted = cleanup("run-a", "medrl", launcher="trainjob")
    assert len(deleted) == 2 and sorted(deleted) == sorted(kube.deleted)
    left = [job.body["metadata"]["labels"]["medrl.io/pipeline-run"] for job in kube.trainjobs.values()]
    assert left == ["run-b"]
    listed = [r for r in kube.requests if r["method"] == "GET" and r["path"].endswith("/trainjobs")]
    assert listed[0]["query"]["labelSelector"] == ["medrl.io/pipeline-run=run-a"]  # selected by the server


def test_medrls_namespaced_runtime_is_found_before_a_cluster_one(kube):
    kube.start_jobs = False
    kube.runtimes[("TrainingRuntime", "medrl", "medrl-torch-distributed")] = build_runtime()
    kube.runtimes[("ClusterTrainingRuntime", "", "medrl-torch-distributed")] = STOCK
    spec = TrainSpec.from_params("file:///runs/x", "grpo", {**FAST, "training_runtime": "medrl-torch-distributed"})
    TrainJobLauncher().submit(spec)
    (job,) = posts(kube)
    assert job["spec"]["runtimeRef"]["kind"] == "TrainingRuntime"


def test_a_cluster_runtime_the_launcher_may_not_read_is_left_to_the_webhook(kube):
    kube.start_jobs = False
    kube.cluster_runtimes_forbidden = True
    TrainJobLauncher().submit(TrainSpec.from_params("file:///runs/x", "grpo", FAST))
    assert len(kube.trainjobs) == 1
    kube.runtimes.clear()  # now the webhook refuses it, and says why
    with pytest.raises(LaunchError, match=r"spec\.runtimeRef: torch-distributed not found"):
        TrainJobLauncher().submit(TrainSpec.from_params("file:///runs/y", "grpo", FAST))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda k: setattr(k, "trainer_crd", False), r"does not serve trainjobs.trainer.kubeflow.org .*Fix: install "
                                                      r"Kubeflow Trainer v2.3.*or use launcher=pytorchjob"),
        (lambda k: k.runtimes.clear(), r"training_runtime 'torch-distributed': no TrainingRuntime medrl/torch-"
                                       r"distributed and no ClusterTrainingRuntime torch-distributed. Fix: install"),
        (lambda k: k.forbidden_namespaces.add("medrl"), r"may not create trainjobs in namespace medrl. Fix: kubectl "
                                                        r"apply -k k8s/overlays/<site>"),
    ],
    ids=["missing-crd", "missing-runtime", "namespace-forbidden"],
)  # fmt: skip
def test_bad_input_names_what_is_wrong_and_the_fix_and_creates_nothing(kube, breakage, message):
    breakage(kube)
    with pytest.raises(LaunchError, match=message):
        TrainJobLauncher().submit(TrainSpec.from_params("file:///runs/x", "grpo", FAST))
    assert kube.trainjobs == {}


def test_auto_chooses_trainjob_where_the_crd_is_served(kube, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert resolve("auto") == "trainjob"
    kube.trainer_crd = False
    assert resolve("auto") == "pytorchjob"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    assert resolve("auto") == "inprocess" and resolve("trainjob") == "trainjob"
