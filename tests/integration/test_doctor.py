"""`medrl doctor` with a kubeconfig: a checklist against a STUB of the Kubernetes API server (tests/standins.py)
that answers discovery, SubjectAccessReviews, namespaces, Secrets, ConfigMaps, nodes and the service proxy the
way a healthy cluster does; each broken part must show as FAIL with its fix, and the command exits 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medrl.cli import app
from medrl.doctor import LAUNCHER_VERBS, cluster_checks
from tests.standins import KubeStandIn

RUNNER = "system:serviceaccount:kubeflow:pipeline-runner"
ENDPOINTS = {
    "store": "http://medrl-minio.medrl.svc:9000",
    "prometheus": "http://prometheus-operated.monitoring.svc:9090",
}


def gpu_node(name: str, gpus: int, ready: bool = True, cordoned: bool = False) -> dict:
    return {"metadata": {"name": name}, "spec": {"unschedulable": cordoned},
            "status": {"allocatable": {"cpu": "64", "nvidia.com/gpu": str(gpus)},
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}  # fmt: skip


@pytest.fixture()
def cluster(tmp_path):
    with KubeStandIn(tmp_path) as kube:
        kube.namespaces = {"medrl": {"pod-security.kubernetes.io/enforce": "restricted"}, "kubeflow": {}}
        kube.allowed = {(RUNNER, "medrl", r + ("/" + s if s else ""), v) for _, r, s, v in LAUNCHER_VERBS}
        for ns in ("medrl", "kubeflow"):
            kube.objects[("secrets", ns, "medrl-store")] = {"accesskey": "eA==", "secretkey": "eQ=="}
        kube.nodes = [gpu_node("a100-1", 8), gpu_node("cpu-1", 0)]
        kube.healthy_services = {"http:medrl-minio:9000", "http:prometheus-operated:9090",
                                 "http:medrl-pushgateway:9091", "http:medrl-judge:8000"}  # fmt: skip
        kube.config = str(kube.kubeconfig(tmp_path / "kubeconfig"))
        yield kube


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_cluster_passes_every_check(cluster, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    checks = cluster_checks(cluster.config, gpus_per_node=4, endpoints=ENDPOINTS)
    assert [c.name for c in checks if not c.ok] == []
    names = by_name(checks)
    assert "v1.33.0-standin" in names["Kubernetes API"].detail
    assert "a100-1=8" in names["GPUs schedulable"].detail and "cpu-1" not in names["GPUs schedulable"].detail
    assert "service proxy" in names["judge reachable"].detail
    reviews = [r["body"]["spec"] for r in cluster.requests if r["path"].endswith("subjectaccessreviews")]
    assert {(r["resourceAttributes"]["resource"], r["resourceAttributes"]["verb"]) for r in reviews} >= {
        ("pytorchjobs", "create"), ("pytorchjobs", "watch"), ("pytorchjobs", "delete"), ("pods", "list")
    }  # fmt: skip
    assert all(r["user"] == RUNNER for r in reviews)


def test_each_broken_part_fails_with_its_fix(cluster, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster.crd = False
    cluster.allowed = {a for a in cluster.allowed if a[3] != "create"}
    cluster.namespaces["medrl"] = {}
    del cluster.objects[("secrets", "kubeflow", "medrl-store")]
    cluster.healthy_services.discard("http:medrl-judge:8000")
    cluster.nodes = [gpu_node("a100-1", 8, cordoned=True), gpu_node("a100-2", 2)]
    checks = by_name(cluster_checks(cluster.config, gpus_per_node=4, endpoints=ENDPOINTS))
    failed = {name: c for name, c in checks.items() if not c.ok}
    assert set(failed) == {
        "PyTorchJob CRD (kubeflow.org/v1)", "namespace medrl", "RBAC of kubeflow/pipeline-runner in medrl",
        "store Secret kubeflow/medrl-store", "judge reachable", "GPUs schedulable",
    }  # fmt: skip
    assert "Training Operator" in failed["PyTorchJob CRD (kubeflow.org/v1)"].fix
    assert failed["RBAC of kubeflow/pipeline-runner in medrl"].detail == "may not create pytorchjobs"
    assert "pod-security.kubernetes.io/enforce=restricted" in failed["namespace medrl"].fix
    assert "create secret generic medrl-store" in failed["store Secret kubeflow/medrl-store"].fix
    assert "rollout status deploy/medrl-judge" in failed["judge reachable"].fix
    assert "GPU Operator" in failed["GPUs schedulable"].fix


def test_an_unreachable_api_server_is_one_clear_failure(tmp_path):
    config = tmp_path / "kubeconfig"
    with KubeStandIn(tmp_path) as kube:
        kube.kubeconfig(config)
    checks = cluster_checks(str(config))  # the server is gone now
    assert len(checks) == 1 and not checks[0].ok and "kubeconfig" in checks[0].fix


def test_doctor_command_prints_the_checklist_and_exits_1_on_failure(cluster, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster.crd = False
    out = CliRunner().invoke(app, ["doctor", "--kubeconfig", cluster.config, "--gpus", "4", "--store-endpoint",
                                   ENDPOINTS["store"], "--prometheus", ENDPOINTS["prometheus"]])  # fmt: skip
    assert out.exit_code == 1, out.output
    assert "[ok ] package torch" in out.output and "[ok ] GPUs schedulable" in out.output
    assert (
        "[FAIL] PyTorchJob CRD (kubeflow.org/v1)" in out.output and "fix: install the Kubeflow Training" in out.output
    )


def test_doctor_without_a_kubeconfig_checks_this_machine(tmp_path, monkeypatch):
    for var in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    out = CliRunner().invoke(app, ["doctor"])
    assert "no kubeconfig: checking this machine only" in out.output
    assert "[ok ] package torch" in out.output and "Kubernetes API" not in out.output


def test_a_kubeconfig_that_does_not_exist_is_named_not_skipped(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    out = subprocess.run([sys.executable, "-m", "medrl", "doctor"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "KUBECONFIG=" in out.stderr and "no such file" in out.stderr, out.stderr
    local = subprocess.run([sys.executable, "-m", "medrl", "doctor", "--local"], capture_output=True, text=True)
    assert "[ok ] package torch" in local.stdout
