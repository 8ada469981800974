"""`medrl doctor` with a kubeconfig: a checklist against a STUB of the Kubernetes API server (tests/support/standins.py)
that answers discovery, SubjectAccessReviews, namespaces, Secrets, ConfigMaps, nodes and the service proxy the
way a healthy cluster does; each broken part must show as FAIL with its fix, and the command exits 1."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medrl.cli import app
from medrl.doctor import DRIVER_FLOOR, LAUNCHER_VERBS, cluster_checks, local_driver_version
from tests.support.standins import KubeStandIn

RUNNER = "system:serviceaccount:kubeflow:pipeline-runner"
ENDPOINTS = {
    "store": "http://medrl-minio.medrl.svc:9000",
    "prometheus": "http://prometheus-operated.monitoring.svc:9090",
}


def gpu_node(name: str, gpus: int, ready: bool = True, cordoned: bool = False, labels: dict | None = None) -> dict:
    # GPU feature discovery labels the driver's major version on GPU nodes (the older spelling here).
    labels = {"nvidia.com/cuda.driver.major": "580"} if labels is None and gpus else labels or {}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"unschedulable": cordoned},
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
    # In-process: the session has imported torch, TRL and DeepSpeed already; a new interpreter pays ~10 s for them.
    local = CliRunner().invoke(app, ["doctor", "--local"])
    assert local.exit_code != 2 and "[ok ] package torch" in local.output, local.output  # 2: refused


DRIVER = f"NVIDIA driver >= {DRIVER_FLOOR} on GPU nodes"


def test_gpu_nodes_with_an_old_driver_fail_the_driver_floor(cluster, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster.nodes = [
        gpu_node("a100-new", 8, labels={"nvidia.com/cuda.driver-version.major": "580"}),  # GFD's newer spelling
        gpu_node("a100-old", 8, labels={"nvidia.com/cuda.driver.major": "550"}),
        gpu_node("a100-old-down", 8, ready=False, labels={"nvidia.com/cuda.driver.major": "535"}),
        gpu_node("cpu-1", 0),
    ]
    check = by_name(cluster_checks(cluster.config, endpoints=ENDPOINTS))[DRIVER]
    assert not check.ok and check.detail == "older driver on a100-old=550"  # a NotReady node cannot run pods
    assert "580 or newer" in check.fix and "node_selector" in check.fix
    cluster.nodes = [gpu_node("a100-new", 8, labels={"nvidia.com/cuda.driver.major": "590"}), gpu_node("cpu-1", 0)]
    check = by_name(cluster_checks(cluster.config, endpoints=ENDPOINTS))[DRIVER]
    assert check.ok and check.detail == "a100-new=590"


def test_gpu_nodes_without_driver_labels_are_not_taken_as_new_enough(cluster, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster.nodes = [gpu_node("a100-1", 8, labels={})]
    check = by_name(cluster_checks(cluster.config, endpoints=ENDPOINTS))[DRIVER]
    assert not check.ok and "no driver label" in check.detail and "GPU feature discovery" in check.fix


NVIDIA_SMI_STANDIN = """#!/bin/sh
# A STAND-IN for nvidia-smi (no GPU here): answers the driver query with a fixed version.
[ "$1" = "--query-gpu=driver_version" ] && echo "$MEDRL_TEST_DRIVER" && exit 0
exit 9
"""


def test_local_driver_version_from_nvidia_smi_or_the_kernel_module(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi: the /proc file
    proc = tmp_path / "version"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.82.07  Release Build  (dvs-builder)\n"
    )
    assert local_driver_version(proc) == "580.82.07"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n")
    assert local_driver_version(proc) == "535.183.01"
    assert local_driver_version(tmp_path / "absent") is None  # no driver: a CPU machine
    (tmp_path / "bin").mkdir()
    smi = tmp_path / "bin" / "nvidia-smi"
    smi.write_text(NVIDIA_SMI_STANDIN)
    smi.chmod(0o755)
    monkeypatch.setenv("MEDRL_TEST_DRIVER", "570.86.15")
    assert local_driver_version(proc) == "570.86.15"  # nvidia-smi first


def test_doctor_on_a_machine_with_an_old_driver_fails(tmp_path, monkeypatch):
    for var in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text(NVIDIA_SMI_STANDIN)
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("MEDRL_TEST_DRIVER", "550.54.15")
    out = CliRunner().invoke(app, ["doctor", "--local"])
    assert out.exit_code == 1, out.output
    assert "[FAIL] NVIDIA driver" in out.output and "550.54.15" in out.output and "580 or newer" in out.output
    monkeypatch.setenv("MEDRL_TEST_DRIVER", "580.65.06")
    out = CliRunner().invoke(app, ["doctor", "--local"])
    assert "[ok ] NVIDIA driver" in out.output, out.output
