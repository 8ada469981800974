"""`medrl doctor` for the TrainJob launcher, against the Kubernetes API STUB (tests/support/standins.py) with
Kubeflow Trainer v2 served: the TrainJob CRD, the runtime TrainJobs reference and the launcher's RBAC for them,
each broken part a FAIL naming it and its fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medrl.cluster.trainjob import build_runtime
from medrl.doctor import TRAINJOB_VERBS, cluster_checks
from tests.integration.test_doctor import ENDPOINTS, RUNNER, by_name, cluster  # noqa: F401  (fixture)

DATA = Path(__file__).parents[1] / "data" / "trainer-v2.3.0"
STOCK = yaml.safe_load((DATA / "torch_distributed.yaml").read_text())
CRD, RUNTIME, RBAC = (
    "TrainJob CRD (trainer.kubeflow.org/v1alpha1)",
    "training runtime torch-distributed",
    ("RBAC of kubeflow/pipeline-runner in medrl"),
)


@pytest.fixture()
def trainer(cluster, monkeypatch):  # noqa: F811
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster.trainer_crd = True
    cluster.runtimes[("ClusterTrainingRuntime", "", "torch-distributed")] = STOCK
    cluster.allowed = {(RUNNER, "medrl", r + ("/" + s if s else ""), v) for _, r, s, v in TRAINJOB_VERBS}
    return cluster


def test_auto_checks_the_trainjob_launcher_where_trainer_is_served(trainer):
    checks = by_name(cluster_checks(trainer.config, gpus_per_node=4, endpoints=ENDPOINTS))
    assert [n for n, c in checks.items() if not c.ok] == []
    assert CRD in checks and "PyTorchJob CRD (kubeflow.org/v1)" not in checks
    stock = "ClusterTrainingRuntime torch-distributed: torch, no `metrics` port: training is not scraped"
    assert checks[RUNTIME].detail == stock
    reviews = {(r["body"]["spec"]["resourceAttributes"]["resource"], r["body"]["spec"]["resourceAttributes"]["verb"])
               for r in trainer.requests if r["path"].endswith("subjectaccessreviews")}  # fmt: skip
    assert {
        ("trainjobs", "create"),
        ("trainjobs", "delete"),
        ("trainingruntimes", "get"),
        ("events", "list"),
    } <= reviews
    assert not any(resource == "pytorchjobs" for resource, _ in reviews)


def test_medrls_runtime_is_found_in_the_namespace(trainer):
    trainer.runtimes[("TrainingRuntime", "medrl", "medrl-torch-distributed")] = build_runtime()
    checks = by_name(cluster_checks(trainer.config, endpoints=ENDPOINTS, training_runtime="medrl-torch-distributed"))
    runtime = checks["training runtime medrl-torch-distributed"]
    assert runtime.ok and runtime.detail == "TrainingRuntime medrl-torch-distributed: torch, its `metrics` port is " \
        "scraped"  # fmt: skip


def test_each_broken_trainjob_part_fails_with_its_fix(trainer):
    trainer.runtimes.clear()
    trainer.allowed = {a for a in trainer.allowed if a[2] != "trainjobs" or a[3] != "create"}
    failed = {n: c for n, c in by_name(cluster_checks(trainer.config, endpoints=ENDPOINTS)).items() if not c.ok}
    assert set(failed) == {RUNTIME, RBAC}
    assert failed[RUNTIME].detail == "no TrainingRuntime medrl/torch-distributed and no ClusterTrainingRuntime " \
        "torch-distributed"  # fmt: skip
    assert "manifests/overlays/runtimes?ref=v2.3.0" in failed[RUNTIME].fix
    assert "k8s/components/trainer" in failed[RUNTIME].fix
    assert failed[RBAC].detail == "may not create trainjobs" and "medrl-launcher" in failed[RBAC].fix


def test_a_runtime_without_torchrun_is_refused(trainer):
    mpi = {**STOCK, "spec": {**STOCK["spec"], "mlPolicy": {"numNodes": 1, "mpi": {"numProcPerNode": 1}}}}
    trainer.runtimes[("ClusterTrainingRuntime", "", "torch-distributed")] = mpi
    runtime = by_name(cluster_checks(trainer.config, endpoints=ENDPOINTS))[RUNTIME]
    assert not runtime.ok and "no torch ML policy" in runtime.detail


def test_launcher_trainjob_on_a_cluster_without_trainer_names_the_install(trainer):
    trainer.trainer_crd = False
    checks = by_name(cluster_checks(trainer.config, endpoints=ENDPOINTS, launcher="trainjob"))
    assert not checks[CRD].ok and "kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0" in checks[CRD].fix
    assert not checks[RUNTIME].ok
    auto = by_name(cluster_checks(trainer.config, endpoints=ENDPOINTS))  # auto: the PyTorchJob launcher's checks
    assert "PyTorchJob CRD (kubeflow.org/v1)" in auto and CRD not in auto
