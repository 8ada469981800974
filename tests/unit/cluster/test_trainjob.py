"""TrainJobs built by medrl: valid against the upstream Kubeflow Trainer v2.3.0 CRD schemas (tests/data/
trainer-v2.3.0, source named there; unknown fields rejected, as strict as kubernetes-validate), round-tripping through
Trainer's generated models (kubeflow-trainer-api) where installed, passing the admission rules the schema cannot
state (re-implemented in medrl.cluster.trainjob; each rule, and each schema rule it leaves to the API server, tested to
reject), and every pod Trainer would create from the runtime plus medrl's
RuntimePatches meets the pod restrictions. The committed example and runtime are what the code builds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from medrl.cluster.launch import TrainSpec
from medrl.cluster.trainjob import Runtime, admission_errors, build_runtime, build_trainjob
from medrl.doctor import TRAINJOB_VERBS
from tests.support.crd import crd_validator, schema_errors
from tests.support.podpolicy import violations
from tests.unit.test_k8s import EXAMPLE, K8S, find, render

TRAINER_VERSION = "v2.3.0"
DATA = Path(__file__).parents[2] / "data" / f"trainer-{TRAINER_VERSION}"
STOCK = yaml.safe_load((DATA / "torch_distributed.yaml").read_text())


TRAINJOB, RUNTIME = (crd_validator(DATA / f"trainer.kubeflow.org_{p}.yaml.gz", "v1alpha1")
                     for p in ("trainjobs", "trainingruntimes"))  # fmt: skip
SHAPES = [{}, {"gpus_per_node": 4}, {"nodes": 2, "gpus_per_node": 8, "active_deadline_seconds": 86400},
          {"node_selector": {"nvidia.com/gpu.product": "A100"}, "pipeline_run": "f1c2",
           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "tolerationSeconds": 30}]}]  # fmt: skip


def job(runtime: Runtime | None = None, **kw) -> dict:
    return build_trainjob(TrainSpec(run_uri="s3://medrl/runs/paper/r1", arm="sft-grpo", **kw), runtime)


@pytest.mark.parametrize("shape", SHAPES)
def test_trainjobs_and_the_runtime_validate_against_the_upstream_schemas(shape):
    doc = job(**shape)
    assert list(TRAINJOB.iter_errors(doc)) == [] and admission_errors(doc) == []
    assert list(RUNTIME.iter_errors(build_runtime())) == []
    for committed, validator in ((K8S / "examples" / "trainjob-grpo.yaml", TRAINJOB),
                                 (K8S / "components" / "trainer" / "training-runtime.yaml", RUNTIME)):  # fmt: skip
        assert list(validator.iter_errors(yaml.safe_load(committed.read_text()))) == [], committed


def test_the_schema_rejects_what_trainer_v2_2_removed():
    with_overrides = job()
    with_overrides["spec"]["podTemplateOverrides"] = [{"targetJobs": [{"name": "node"}]}]
    assert "'podTemplateOverrides' was unexpected" in next(TRAINJOB.iter_errors(with_overrides)).message
    runtime = build_runtime()
    runtime["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = 4  # moved to the TrainJob's trainer in v2.2
    assert "'numProcPerNode' was unexpected" in next(RUNTIME.iter_errors(runtime)).message


def test_round_trips_through_trainers_generated_models():
    models = pytest.importorskip("kubeflow_trainer_api.models", reason="pip install kubeflow-trainer-api==2.3.0")
    for shape in SHAPES:
        doc = job(**shape)
        assert models.TrainerV1alpha1TrainJob.from_dict(doc).to_dict() == doc
    assert models.TrainerV1alpha1TrainingRuntime.from_dict(build_runtime()).to_dict() == build_runtime()


@pytest.mark.parametrize(("nodes", "gpus"), [(1, 0), (1, 4), (2, 4), (4, 8)])
def test_job_carries_what_the_pytorchjob_path_gives_a_training_pod(nodes, gpus):
    doc = job(nodes=nodes, gpus_per_node=gpus, pipeline_run="f1c2",
              node_selector={"pool": "a100"}, tolerations=[{"key": "gpu", "operator": "Exists"}])  # fmt: skip
    trainer = doc["spec"]["trainer"]
    assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == (gpus or 1)  # never `auto`
    assert trainer["command"] == ["medrl", "train-arm", "--run", "s3://medrl/runs/paper/r1", "--arm", "sft-grpo"]
    resources = trainer["resourcesPerNode"]
    assert resources["requests"] == resources["limits"]
    assert resources["limits"].get("nvidia.com/gpu") == (str(gpus) if gpus else None)
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MEDRL_DEEPSPEED"]["value"] == ("zero2" if gpus else "none")
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "medrl-store", "key": "secretkey", "optional": True}  # fmt: skip
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "medrl-mlflow", "key": "password", "optional": True}  # fmt: skip
    assert env["MEDRL_JUDGE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "medrl-judge-key", "key": "api-key", "optional": True}  # fmt: skip
    assert env["AWS_ENDPOINT_URL_S3"]["valueFrom"]["configMapKeyRef"]["name"] == "medrl-store"
    (patch,) = doc["spec"]["runtimePatches"]
    assert patch["manager"] == "medrl.io/launcher"
    (node,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    template = node["template"]["spec"]["template"]
    assert template["metadata"]["labels"]["medrl.io/pipeline-run"] == "f1c2"
    assert doc["metadata"]["labels"] == template["metadata"]["labels"]
    pod = template["spec"]
    assert pod["serviceAccountName"] == "medrl-train"
    assert pod["nodeSelector"] == {"pool": "a100"} and pod["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}} in pod["volumes"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["containers"][0]["volumeMounts"]


# ------------------------------------------------------------------------------- the pods Trainer creates


def _merge_named(base: list[dict], patch: list[dict], key: str = "name") -> list[dict]:
    out = {item[key]: copy.deepcopy(item) for item in base}
    for item in patch:
        merged = out.setdefault(item[key], {})
        for field, value in item.items():
            if field == "volumeMounts":
                merged[field] = _merge_named(merged.get(field, []), value, "mountPath")
            elif field == "securityContext":
                merged[field] = {**merged.get(field, {}), **value}
            else:
                merged[field] = value
    return list(out.values())


def trainjob_pods(trainjob: dict, runtime: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod Trainer creates: the runtime's pod templates with the TrainJob's patches merged
    as a strategic merge patch would (lists by name, securityContext by field), then the trainer's fields on `node`."""
    patches = {r["name"]: r["template"]["spec"]["template"]["spec"]
               for p in trainjob["spec"]["runtimePatches"]
               for r in p["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]}  # fmt: skip
    pods = []
    for rjob in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        pod = copy.deepcopy(rjob["template"]["spec"]["template"]["spec"])
        patch = patches.get(rjob["name"], {})
        for field, value in patch.items():
            if field in ("containers", "initContainers", "volumes"):
                pod[field] = _merge_named(pod.get(field, []), value)
            elif field == "securityContext":
                pod[field] = {**pod.get(field, {}), **value}
            else:
                pod[field] = value
        for container in pod["containers"]:
            if container["name"] == "node":
                container["resources"] = trainjob["spec"]["trainer"]["resourcesPerNode"]
        pods.append((f"TrainJob/{trainjob['metadata']['name']}[{rjob['name']}]", pod))
    return pods


def with_initializers() -> dict:
    """A runtime with dataset and model initializer jobs (the shape of Trainer's LLM runtimes)."""
    doc = copy.deepcopy(STOCK)
    jobs = doc["spec"]["template"]["spec"]["replicatedJobs"]
    for name in ("dataset-initializer", "model-initializer"):
        container = {
            "name": name,
            "image": f"ghcr.io/kubeflow/trainer/{name}",
            "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "1", "memory": "2Gi"}},
        }
        pod = {"initContainers": [{**container, "name": "fetch-credentials"}], "containers": [container]}
        meta = {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": name}}
        jobs.insert(0, {"name": name, "template": {"metadata": meta, "spec": {"template": {"spec": pod}}}})
    return doc


@pytest.mark.parametrize("runtime_doc", [STOCK, build_runtime(), with_initializers()],
                         ids=["torch-distributed", "medrl-torch-distributed", "with-initializers"])  # fmt: skip
def test_every_pod_a_trainjob_creates_meets_the_restrictions(runtime_doc):
    runtime = Runtime.from_doc(runtime_doc)
    doc = job(runtime, nodes=2, gpus_per_node=4)
    assert admission_errors(doc, runtime) == []
    pods = trainjob_pods(doc, runtime_doc)
    assert len(pods) == len(runtime.containers)
    assert [v for where, pod in pods for v in violations(where, pod)] == []


def test_the_merged_pods_show_a_container_the_patches_missed():
    runtime_doc = with_initializers()
    doc = job(Runtime.from_doc(runtime_doc))  # patches every container it was told of...
    runtime_doc["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"][
        "containers"].append({"name": "sidecar", "image": "x", "resources": {}})  # ...not this one  # fmt: skip
    problems = [v for where, pod in trainjob_pods(doc, runtime_doc) for v in violations(where, pod)]
    assert any("container sidecar: readOnlyRootFilesystem not true" in p for p in problems)


# ------------------------------------------------------------------------------- admission rules


def _mutate(doc, fn):
    out = copy.deepcopy(doc)
    fn(out)
    return out


def _rjob(d):
    return d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]


def _pod(d):
    return d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]["template"][
        "spec"]["template"]["spec"]  # fmt: skip


RULES = [
    (lambda d: d["metadata"].update(name="Medrl_Job"), "metadata.name"),
    (lambda d: d["metadata"].update(name="m" * 64), "metadata.name"),
    (lambda d: d["spec"]["runtimeRef"].update(kind="Runtime"), "spec.runtimeRef.kind"),
    (lambda d: d["spec"]["trainer"].update(numNodes=0), "spec.trainer.numNodes: must be at least 1"),
    (lambda d: d["spec"]["trainer"].update(numProcPerNode=0), "spec.trainer.numProcPerNode: must be at least 1"),
    (lambda d: d["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"}), "reserved envs"),
    (lambda d: d["spec"]["runtimePatches"][0].update(manager="medrl"), "domain-prefixed path"),
    (lambda d: _rjob(d).update(name="launcher"), "replicated job 'launcher' is not in runtime torch-distributed"),
    (lambda d: _pod(d)["containers"][0].update(name="trainer"), "container 'trainer' is not in the runtime's node"),
    (lambda d: _pod(d)["containers"][0].update(env=[{"name": "X", "value": "1"}]), "must not have envs for the node"),
]


@pytest.mark.parametrize(("mutation", "message"), RULES)
def test_each_admission_rule_rejects(mutation, message):
    runtime = Runtime.from_doc(STOCK)
    errors = admission_errors(_mutate(job(runtime), mutation), runtime)
    assert any(message in e for e in errors), errors


# What the CRD's schema states is left to the API server (and checked of every built job above): admission_errors
# no longer repeats it.
SCHEMA_RULES = [
    (lambda d: d["spec"]["runtimeRef"].pop("name"), "spec.runtimeRef: 'name' is a required property"),
    (lambda d: d["spec"]["runtimeRef"].update(name=""), "spec.runtimeRef.name: '' should be non-empty"),
    (
        lambda d: d["spec"].update(activeDeadlineSeconds=0),
        "spec.activeDeadlineSeconds: 0 is less than the minimum of 1",
    ),
    (lambda d: d["spec"].update(podTemplateOverrides=[]), "'podTemplateOverrides' was unexpected"),  # gone in v2.2
    (
        lambda d: d["spec"]["runtimePatches"][0].update(manager=""),
        "spec.runtimePatches.0.manager: '' should be non-empty",
    ),
    (lambda d: d["spec"]["trainer"].update(numNodes="2"), "spec.trainer.numNodes: '2' is not of type 'integer'"),
]


@pytest.mark.parametrize(("mutation", "message"), SCHEMA_RULES)
def test_the_crd_schema_rejects_what_admission_errors_leaves_to_it(mutation, message):
    runtime = Runtime.from_doc(STOCK)
    errors = schema_errors(TRAINJOB, _mutate(job(runtime), mutation))
    assert any(message in e for e in errors), errors


# ------------------------------------------------------------------------------- k8s/


def test_example_trainjob_and_the_runtime_are_what_medrl_builds():
    """Regenerate: medrl.cluster.trainjob.to_yaml(build_trainjob(EXAMPLE)) into k8s/examples/trainjob-grpo.yaml and
    to_yaml(build_runtime()) into k8s/components/trainer/training-runtime.yaml (keep their header comments)."""
    committed = yaml.safe_load((K8S / "examples" / "trainjob-grpo.yaml").read_text())
    assert committed == build_trainjob(EXAMPLE), "k8s/examples/trainjob-grpo.yaml is stale"
    runtime = yaml.safe_load((K8S / "components" / "trainer" / "training-runtime.yaml").read_text())
    assert runtime == build_runtime(), "k8s/components/trainer/training-runtime.yaml is stale"


def test_the_trainer_component_renders_in_a_site_overlay(tmp_path):
    rel = Path("..") / Path(*([".."] * (len(tmp_path.parts) - 1))) / K8S.relative_to("/")
    site = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(rel / "overlays" / "onprem-a100")],
        "components": [str(rel / "components" / "trainer")],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(site))
    docs = render(tmp_path)
    runtime = find(docs, "TrainingRuntime", "medrl-torch-distributed")
    assert list(RUNTIME.iter_errors(runtime)) == []
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]  # the Role is enough
    # The PodMonitor scrapes training pods on the runtime's `metrics` port.
    monitor = find(docs, "PodMonitor", "medrl-training")
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in {p["name"] for p in node["containers"][0]["ports"]}
    pod_labels = _rjob(build_trainjob(EXAMPLE))["template"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_the_launcher_role_grants_what_doctor_checks_and_no_more():
    docs = render(K8S / "base")
    rules = find(docs, "Role", "medrl-launcher")["rules"]
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    wanted = {(g, r + ("/" + s if s else ""), v) for g, r, s, v in TRAINJOB_VERBS}
    assert wanted <= granted
    trainer = {(g, r, v) for g, r, v in granted if g == "trainer.kubeflow.org"}
    assert trainer == {(g, r, v) for g, r, v in wanted if g == "trainer.kubeflow.org"}
