"""PyTorchJobs built by medrl: valid against the training operator v1.9.4's PyTorchJob CRD schema (tests/data/
training-operator-v1.9.4, source named there; unknown fields rejected), round-tripping through the kubeflow-training
SDK's models, passing the operator's webhook rules that the schema cannot state (re-implemented in
medrl.cluster.pytorchjob, each rule tested to reject), and their pods validate as Kubernetes Pods."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubeflow.training import models
from kubeflow.training.api_client import ApiClient
from kubeflow.training.utils.utils import FakeResponse

from medrl.cluster.launch import TrainSpec, resolve
from medrl.cluster.pytorchjob import admission_errors, build_pytorchjob, label_value, to_dict
from medrl.config import OpenAIJudgeConfig
from tests.support.crd import DATA, crd_validator, schema_errors

PYTORCHJOB = crd_validator(DATA / "training-operator-v1.9.4" / "kubeflow.org_pytorchjobs.yaml.gz", "v1")


def job(**kw) -> dict:
    return to_dict(build_pytorchjob(TrainSpec(run_uri="s3://medrl/runs/paper/r1", arm="sft-grpo", **kw)))


@pytest.mark.parametrize(("nodes", "gpus"), [(1, 0), (1, 4), (2, 4), (4, 8)])
def test_job_shape_for_one_and_several_nodes(nodes, gpus):
    doc = job(nodes=nodes, gpus_per_node=gpus, pipeline_run="f1c2")
    spec = doc["spec"]
    assert doc["apiVersion"] == "kubeflow.org/v1" and doc["kind"] == "PyTorchJob"
    assert spec["nprocPerNode"] == str(gpus or 1)  # explicit, never "auto"
    replicas = spec["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert ("Worker" in replicas) == (nodes > 1)
    if nodes > 1:
        assert replicas["Worker"]["replicas"] == nodes - 1
    for rspec in replicas.values():
        assert rspec["restartPolicy"] == "ExitCode"
        container = rspec["template"]["spec"]["containers"][0]
        assert container["name"] == "pytorch"
        limits = container["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == (str(gpus) if gpus else None)
        env = {e["name"]: e for e in container["env"]}
        assert env["MEDRL_DEEPSPEED"]["value"] == ("zero2" if gpus else "none")
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {
            "name": "medrl-store", "key": "accesskey", "optional": True
        }  # fmt: skip
        assert env["MLFLOW_TRACKING_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "medrl-mlflow", "key": "token", "optional": True
        }  # fmt: skip
        # the semantic reward's judge key, under the name the openai judge reads by default
        assert env[OpenAIJudgeConfig.model_fields["api_key_env"].default]["valueFrom"]["secretKeyRef"] == {
            "name": "medrl-judge-key", "key": "api-key", "optional": True
        }  # fmt: skip
        shm = next(v for v in rspec["template"]["spec"]["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    policy = spec["runPolicy"]
    assert policy["ttlSecondsAfterFinished"] == 3600 and policy["backoffLimit"] == 3
    assert "activeDeadlineSeconds" not in policy
    assert admission_errors(doc) == [] and schema_errors(PYTORCHJOB, doc) == []


def test_round_trips_through_the_sdk_models():
    doc = job(nodes=2, gpus_per_node=4, node_selector={"nvidia.com/gpu.product": "A100"},
              tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}])  # fmt: skip
    assert schema_errors(PYTORCHJOB, doc) == []
    parsed = ApiClient().deserialize(FakeResponse(doc), "KubeflowOrgV1PyTorchJob")
    assert isinstance(parsed, models.KubeflowOrgV1PyTorchJob)
    assert isinstance(parsed.spec.pytorch_replica_specs["Worker"], models.KubeflowOrgV1ReplicaSpec)
    assert parsed.spec.run_policy.backoff_limit == 3
    assert to_dict(parsed) == doc
    pod = parsed.spec.pytorch_replica_specs["Master"].template.spec
    assert pod.node_selector == {"nvidia.com/gpu.product": "A100"} and pod.tolerations[0].operator == "Exists"


def test_pods_validate_as_kubernetes_pods():
    doc = job(nodes=2, gpus_per_node=4, tolerations=[{"key": "gpu", "operator": "Exists"}])
    for rspec in doc["spec"]["pytorchReplicaSpecs"].values():
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", **rspec["template"]["metadata"]},
               "spec": rspec["template"]["spec"]}  # fmt: skip
        kubernetes_validate.validate(pod, "1.33", strict=True)


def test_job_names_are_stable_dns_labels():
    a = TrainSpec(run_uri="s3://x/run-1", arm="Sft_Full.Arm_with_a_name_far_longer_than_any_label_allows")
    assert a.job_name == TrainSpec(run_uri="s3://x/run-1", arm=a.arm).job_name  # a retry finds its job
    assert a.job_name != TrainSpec(run_uri="s3://x/run-2", arm=a.arm).job_name
    assert len(a.job_name) <= 50 and admission_errors(job()) == []
    assert label_value("-run/ID with spaces-") == "run-ID-with-spaces"


def _mutate(doc, fn):
    out = copy.deepcopy(doc)
    fn(out)
    return out


def _master(d):
    return d["spec"]["pytorchReplicaSpecs"]["Master"]


RULES = [
    (lambda d: d["metadata"].update(name="Medrl_Job"), "metadata.name"),
    (lambda d: d["metadata"].update(name="m" * 64), "metadata.name"),
    (lambda d: d["spec"]["pytorchReplicaSpecs"].update(Chief=_master(d)), "replica type must be Master or Worker"),
    (lambda d: _master(d)["template"]["spec"]["containers"][0].update(name="trainer"), "container with name pytorch"),
    (lambda d: _master(d)["template"]["spec"].update(containers=[]), "containers: must be specified"),
    (lambda d: _master(d)["template"]["spec"]["containers"][0].update(image=""), "image: must be required"),
    (lambda d: _master(d).update(replicas=2), "[Master].replicas: must be 1"),
    (lambda d: _master(d).pop("replicas"), "[Master].replicas: must be 1"),
    (lambda d: d["spec"]["pytorchReplicaSpecs"].update(Worker={**_master(d), "replicas": 0}), "at least 1"),
    (lambda d: _master(d).update(restartPolicy="Sometimes"), "restartPolicy"),
    (lambda d: d["spec"].update(elasticPolicy={"maxReplicas": 2}), "must be configured if elastic policy is used"),
    (lambda d: d["spec"].update(elasticPolicy={"nProcPerNode": 2}), "must not be used with spec.nprocPerNode"),
    (lambda d: d["spec"].update(nprocPerNode="four"), "spec.nprocPerNode"),
    (lambda d: d["spec"]["runPolicy"].update(managedBy="me"), "managedBy"),
    (lambda d: d["spec"]["runPolicy"].update(cleanPodPolicy="Some"), "cleanPodPolicy"),
    (lambda d: d["spec"]["runPolicy"].update(backoffLimit=-1), "backoffLimit: must be greater than or equal to 0"),
]


@pytest.mark.parametrize(("mutation", "message"), RULES)
def test_each_admission_rule_rejects(mutation, message):
    errors = admission_errors(_mutate(job(), mutation))
    assert any(message in e for e in errors), errors


# What the CRD's schema states is left to the API server (and checked of every built job above).
SCHEMA_RULES = [
    (lambda d: d["spec"].pop("pytorchReplicaSpecs"), "spec: 'pytorchReplicaSpecs' is a required property"),
    (lambda d: _master(d)["template"]["spec"]["containers"][0].pop("name"), "'name' is a required property"),
    (lambda d: _master(d).update(replicas="1"), "spec.pytorchReplicaSpecs.Master.replicas: '1' is not of type"),
    (lambda d: d["spec"]["runPolicy"].update(backoffLimits=3), "'backoffLimits' was unexpected"),  # a typo
]


@pytest.mark.parametrize(("mutation", "message"), SCHEMA_RULES)
def test_the_crd_schema_rejects_what_admission_errors_leaves_to_it(mutation, message):
    errors = schema_errors(PYTORCHJOB, _mutate(job(), mutation))
    assert any(message in e for e in errors), errors


def test_the_committed_example_validates_against_the_schema():
    example = yaml.safe_load((Path(__file__).parents[3] / "k8s" / "examples" / "pytorchjob-grpo.yaml").read_text())
    assert example["kind"] == "PyTorchJob" and schema_errors(PYTORCHJOB, example) == []


def test_launcher_resolves_by_where_it_runs(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert resolve("auto") == "inprocess"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.delenv("KUBECONFIG", raising=False)  # in a pod without Kubeflow Trainer's CRD
    assert resolve("auto") == "pytorchjob" and resolve("inprocess") == "inprocess"
    with pytest.raises(ValueError, match="launcher='jobset': choose auto, inprocess, pytorchjob, trainjob"):
        resolve("jobset")


def test_bad_cluster_settings_name_the_setting():
    with pytest.raises(ValueError, match="cluster settings gpus are not known"):
        TrainSpec.from_params("s3://x/r", "a", {"gpus": 4})
    with pytest.raises(ValueError, match="nodes=0"):
        TrainSpec.from_params("s3://x/r", "a", {"nodes": 0})
    with pytest.raises(ValueError, match="active_deadline_seconds=-1: give 0"):
        TrainSpec.from_params("s3://x/r", "a", {"active_deadline_seconds": -1})
    with pytest.raises(ValueError, match="tolerations: unknown field"):
        build_pytorchjob(TrainSpec(run_uri="s3://x/r", arm="a", tolerations=[{"keys": "x"}]))


# The training operator's built-in init container template (training-operator release-1.9,
# pkg/controller.v1/pytorch/initcontainer.go) and its default image flag: what Worker pods get without the site step.
OPERATOR_DEFAULT_TEMPLATE = """
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  resources:
    limits:
      cpu: 100m
      memory: 20Mi
    requests:
      cpu: 50m
      memory: 10Mi
  command: ['sh', '-c', 'until nslookup {{.MasterAddr}}; do echo waiting for master; sleep 2; done;']"""
SITE_STEP = Path(__file__).resolve().parents[3] / "k8s" / "site-steps" / "training-operator-init-container.yaml"


def operator_worker_pod(template: str, image: str, master: str = "job-master-0") -> dict:
    """A Worker pod of a 2-node job as the operator creates it: the template rendered with the job's master address
    and the operator's init image (Go's html/template leaves these DNS names and image references as they are),
    appended to the pod's init containers."""
    doc = job(nodes=2, gpus_per_node=4, image="registry.hospital.internal/medrl/medrl:0.1.0")
    pod = copy.deepcopy(doc["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"])
    rendered = template.replace("{{.InitContainerImage}}", image).replace("{{.MasterAddr}}", master)
    pod["initContainers"] = pod.get("initContainers", []) + yaml.safe_load(rendered)
    return pod


def test_the_site_init_container_passes_pod_security_restricted_with_the_medrl_image():
    from tests.support.podpolicy import violations

    default = operator_worker_pod(OPERATOR_DEFAULT_TEMPLATE, "alpine:3.10")
    assert any("init-pytorch" in v for v in violations("Worker", default))  # why the site step exists

    config_map = yaml.safe_load(SITE_STEP.read_text())
    image = "registry.hospital.internal/medrl/medrl:0.1.0"
    pod = operator_worker_pod(config_map["data"]["initContainer.yaml"], image)
    assert violations("Worker", pod) == []
    assert [c["image"] for c in pod["initContainers"]] == [image]  # no Docker Hub image
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"}, "spec": pod},
                                 "1.33", strict=True)  # fmt: skip

    # The container's command, run here as the image would run it: it returns once the master's name resolves.
    init = pod["initContainers"][0]
    local = operator_worker_pod(config_map["data"]["initContainer.yaml"], image, master="localhost")
    command = local["initContainers"][0]["command"]
    assert command[0] == "python" and init["command"][2] != command[2]
    done = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_training_pods_carry_the_nccl_settings():
    from medrl.cluster.pytorchjob import NCCL_ENV

    for rspec in job(nodes=2, gpus_per_node=4)["spec"]["pytorchReplicaSpecs"].values():
        env = {e["name"]: e.get("value") for e in rspec["template"]["spec"]["containers"][0]["env"]}
        assert {k: env.get(k) for k in NCCL_ENV} == {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
