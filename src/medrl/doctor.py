"""`medrl doctor`: a checklist of what a run needs, each failure with its fix."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from medrl.cluster import trainjob
from medrl.config import ConfigError
from medrl.kfp.parameters import packaged_pipeline


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


# The training image's torch wheels (cu130) and its CUDA 13.0 base need this NVIDIA driver branch or newer on the
# host; older drivers cannot run them (CUDA's minor-version compatibility starts at 580 for 13.x).
DRIVER_FLOOR = 580
DRIVER_FIX = (
    f"upgrade the NVIDIA driver to {DRIVER_FLOOR} or newer (GPU Operator: driver.version), or keep training and "
    "evaluation off older nodes with the node_selector parameter"
)
# Set by GPU feature discovery (the NVIDIA GPU Operator runs it): the newer and the older spelling.
DRIVER_LABELS = ("nvidia.com/cuda.driver-version.major", "nvidia.com/cuda.driver.major")
PROC_DRIVER = Path("/proc/driver/nvidia/version")


def local_driver_version(proc: Path = PROC_DRIVER) -> str | None:
    """This machine's NVIDIA driver version (e.g. "580.65.06"): nvidia-smi, else the kernel module's
    /proc file; None without an NVIDIA driver."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30)  # fmt: skip
            found = re.match(r"\s*(\d+\.\d+(?:\.\d+)?)", out.stdout)
            if out.returncode == 0 and found:
                return found.group(1)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        text = proc.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  ..." (or "... Open Kernel Module for x86_64 ...")
    found = re.search(r"Kernel Module\b.*?\s(\d{3,}\.\d+(?:\.\d+)?)\s", text)
    return found.group(1) if found else None


def driver_check(version: str | None) -> Check | None:
    if version is None:
        return None  # no NVIDIA driver: a CPU machine, nothing to check
    ok = int(version.split(".", 1)[0]) >= DRIVER_FLOOR
    return Check("NVIDIA driver", ok, f"{version} (the training image's CUDA 13.0 needs >= {DRIVER_FLOOR})",
                 "" if ok else DRIVER_FIX)  # fmt: skip


PACKAGES = ["torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "kfp", "deepspeed"]


def local_checks() -> list[Check]:
    checks = []
    for pkg in PACKAGES:
        try:
            importlib.import_module(pkg)
            checks.append(Check(f"package {pkg}", True, md.version(pkg)))
        except Exception as err:  # an import can fail in many ways; report, do not crash
            checks.append(Check(f"package {pkg}", False, type(err).__name__, "make install (or pip install -e .)"))
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    checks.append(Check("accelerator", True, f"{gpus} CUDA device(s)" if gpus else "CPU only (tiny models, demo)"))
    driver = driver_check(local_driver_version())
    if driver:
        checks.append(driver)
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    checks.append(
        Check(
            "model hub",
            True,
            "offline (HF_HUB_OFFLINE=1): models load from disk or the store"
            if offline
            else "online lookups allowed; set HF_HUB_OFFLINE=1 on air-gapped clusters",
        )
    )
    try:
        checks.append(Check("pipeline definition", True, str(packaged_pipeline())))
    except FileNotFoundError as err:
        checks.append(Check("pipeline definition", False, str(err), "make install (or pip install -e .)"))
    return checks


# ---------------------------------------------------------------------------------------------- the cluster

TRAINING_OPERATOR_FIX = (
    "install the Kubeflow Training Operator v1: kubectl apply --server-side -k "
    '"github.com/kubeflow/training-operator.git/manifests/overlays/standalone?ref=v1.9.2"'
)
ENDPOINTS = {
    "store": ("", "/"),
    "prometheus": ("http://prometheus-operated.monitoring.svc:9090", "/-/ready"),
    "pushgateway": ("http://medrl-pushgateway.medrl.svc:9091", "/-/ready"),
    "judge": ("http://medrl-judge.medrl.svc:8000", "/health"),
}
ENDPOINT_FIXES = {
    "store": "set AWS_ENDPOINT_URL_S3 in the medrl-store ConfigMap (k8s/overlays/<site>/store.yaml) or add the "
    "optional MinIO (k8s/components/minio), then check the store's own health",
    "prometheus": "install the Prometheus Operator (kube-prometheus-stack) or pass --prometheus URL",
    "pushgateway": "kubectl apply -k k8s/overlays/onprem-a100, then "
    "kubectl -n medrl rollout status deploy/medrl-pushgateway",
    "judge": "kubectl -n medrl rollout status deploy/medrl-judge; its model must be on the models volume or a hub "
    "mirror (logs: kubectl -n medrl logs deploy/medrl-judge)",
}
JOB_VERBS = ("create", "get", "list", "watch", "delete")
LAUNCHER_VERBS = [("kubeflow.org", "pytorchjobs", "", v) for v in JOB_VERBS]
LAUNCHER_VERBS += [("", "pods", "", v) for v in ("get", "list")] + [("", "pods", "log", "get")]
# The TrainJob launcher also reads the namespaced runtime it references and, when a job fails, its events.
TRAINJOB_VERBS = [("trainer.kubeflow.org", "trainjobs", "", v) for v in JOB_VERBS]
TRAINJOB_VERBS += [("trainer.kubeflow.org", "trainingruntimes", "", "get"), ("", "events", "", "list")]
TRAINJOB_VERBS += LAUNCHER_VERBS[len(JOB_VERBS) :]


def kubeconfig_available(kubeconfig: str | None) -> bool:
    """Whether a cluster is named: --kubeconfig, KUBECONFIG, ~/.kube/config or the pod's service account. A
    kubeconfig the user named that does not exist is an error, not a silent fall back to local checks."""
    from pathlib import Path

    if kubeconfig:
        if not Path(kubeconfig).expanduser().is_file():
            raise ConfigError(f"--kubeconfig {kubeconfig}: no such file; give your cluster's kubeconfig, or --local")
        return True
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    named = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if named and not any(Path(p).expanduser().is_file() for p in named):
        raise ConfigError(
            f"KUBECONFIG={os.environ['KUBECONFIG']}: no such file; point it at your cluster's kubeconfig, unset it, "
            "or give --local to check only this machine"
        )
    return any(Path(p).expanduser().is_file() for p in named or ["~/.kube/config"])


def _api_client(kubeconfig: str | None, context: str | None):
    from kubernetes import client, config

    if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        cfg = client.Configuration()
        config.load_incluster_config(client_configuration=cfg)
        return client.ApiClient(cfg)
    return config.new_client_from_config(config_file=kubeconfig, context=context)


def _status(err: Exception) -> int | None:
    return getattr(err, "status", None)


def cluster_checks(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str = "medrl",
    kfp_namespace: str = "kubeflow",
    service_account: str = "pipeline-runner",
    gpus_per_node: int = 0,
    endpoints: dict[str, str] | None = None,
    store_secret: str = "medrl-store",
    launcher: str = "auto",
    training_runtime: str = "torch-distributed",
) -> list[Check]:
    """What a cluster run needs: the API, the CRD of the launcher (`auto`: TrainJob where Kubeflow Trainer v2 is
    served, else PyTorchJob) and for TrainJobs their runtime, RBAC of the run's service account, the namespace,
    the store's Secret, the store, Prometheus, Pushgateway and judge answering, GPUs to schedule on."""
    from kubernetes import client

    try:
        api = _api_client(kubeconfig, context)
        version = client.VersionApi(api).get_code()
    except Exception as err:  # any failure to load or reach is the same finding for the user
        first = (str(err).splitlines() or [""])[0][:200]
        return [Check("Kubernetes API", False, f"{type(err).__name__}: {first}", _KUBECONFIG_FIX)]
    checks = [Check("Kubernetes API", True, f"{api.configuration.host} ({version.git_version})")]
    core = client.CoreV1Api(api)

    launcher = (launcher or "auto").strip().lower()
    if launcher == "auto":
        launcher = "trainjob" if trainjob.crd_installed(api) else "pytorchjob"
    if launcher == "trainjob":
        checks.append(_trainjob_crd_check(api))
        checks.append(_runtime_check(api, namespace, training_runtime))
    else:
        checks.append(_crd_check(api))
    checks.append(_namespace_check(core, namespace))
    checks.append(_rbac_check(api, namespace, kfp_namespace, service_account, launcher))
    for ns in dict.fromkeys([namespace, kfp_namespace]):
        checks.append(_secret_check(core, ns, store_secret))
    urls = {name: default for name, (default, _) in ENDPOINTS.items()} | {
        k: v for k, v in (endpoints or {}).items() if v
    }
    if not urls.get("store"):
        urls["store"] = _store_endpoint(core, namespace)
    for name, url in urls.items():
        checks.append(_endpoint_check(api, name, url))
    checks.append(_gpu_check(core, gpus_per_node))
    checks.append(_driver_check(core))
    return checks


_KUBECONFIG_FIX = "point --kubeconfig (or KUBECONFIG) at a kubeconfig for the cluster and check `kubectl version`"


def _crd_check(api) -> Check:
    name = "PyTorchJob CRD (kubeflow.org/v1)"
    try:
        doc = api.call_api("/apis/kubeflow.org/v1", "GET", response_type="object", auth_settings=["BearerToken"],
                           _return_http_data_only=True)  # fmt: skip
    except Exception as err:
        if _status(err) == 404:
            return Check(name, False, "the API group kubeflow.org/v1 is not served", TRAINING_OPERATOR_FIX)
        return Check(name, False, f"discovery failed: {str(err)[:160]}", TRAINING_OPERATOR_FIX)
    kinds = {r.get("name") for r in (doc or {}).get("resources", [])}
    if "pytorchjobs" not in kinds:
        return Check(name, False, "kubeflow.org/v1 has no pytorchjobs resource", TRAINING_OPERATOR_FIX)
    return Check(name, True, "pytorchjobs.kubeflow.org is served")


def _trainjob_crd_check(api) -> Check:
    name = f"TrainJob CRD ({trainjob.API_VERSION})"
    if not trainjob.crd_installed(api):
        return Check(name, False, f"{trainjob.API_VERSION} does not serve trainjobs", trainjob.TRAINER_FIX)
    return Check(name, True, f"trainjobs.{trainjob.GROUP} is served")


def _runtime_check(api, namespace: str, runtime: str) -> Check:
    """The runtime TrainJobs reference exists (as the launcher finds it) and runs torchrun's ML policy, whose PET_*
    environment `medrl train-arm` reads."""
    from kubernetes import client

    name = f"training runtime {runtime}"
    custom = client.CustomObjectsApi(api)
    doc = None
    for kind, read in (
        ("TrainingRuntime", lambda: custom.get_namespaced_custom_object(
            trainjob.GROUP, trainjob.VERSION, namespace, "trainingruntimes", runtime)),
        ("ClusterTrainingRuntime", lambda: custom.get_cluster_custom_object(
            trainjob.GROUP, trainjob.VERSION, "clustertrainingruntimes", runtime)),
    ):  # fmt: skip
        try:
            doc = read()
            break
        except Exception as err:
            if _status(err) != 404:
                return Check(name, False, f"cannot read {kind} {runtime}: {str(err)[:120]}",
                             "run doctor with a kubeconfig that may read (cluster)trainingruntimes")  # fmt: skip
    if doc is None:
        return Check(name, False, f"no TrainingRuntime {namespace}/{runtime} and no ClusterTrainingRuntime {runtime}",
                     trainjob.RUNTIMES_FIX)  # fmt: skip
    found = trainjob.Runtime.from_doc(doc)
    where = f"{found.kind} {runtime}"
    if "torch" not in ((doc.get("spec") or {}).get("mlPolicy") or {}):
        return Check(name, False, f"{where} has no torch ML policy (medrl trains with torchrun's environment)",
                     f"set training_runtime to torch-distributed or {trainjob.MEDRL_RUNTIME}")  # fmt: skip
    if trainjob.NODE not in found.containers.get(trainjob.NODE, []):
        return Check(name, False, f"{where} has no `node` job with a `node` container", trainjob.RUNTIMES_FIX)
    scraped = "its `metrics` port is scraped" if found.metrics_port else "no `metrics` port: training is not scraped"
    return Check(name, True, f"{where}: torch, {scraped}")


def _namespace_check(core, namespace: str) -> Check:
    name = f"namespace {namespace}"
    fix = f"kubectl apply -k k8s/overlays/onprem-a100 (creates {namespace} labelled Pod Security restricted)"
    try:
        ns = core.read_namespace(namespace)
    except Exception as err:
        detail = "does not exist" if _status(err) == 404 else f"cannot read it: {str(err)[:120]}"
        return Check(name, False, detail, fix)
    enforce = (ns.metadata.labels or {}).get("pod-security.kubernetes.io/enforce")
    if enforce != "restricted":
        return Check(name, False, f"Pod Security enforce={enforce}", f"kubectl label ns {namespace} "
                     "pod-security.kubernetes.io/enforce=restricted --overwrite")  # fmt: skip
    return Check(name, True, "exists, Pod Security enforce=restricted")


def _rbac_check(api, namespace: str, kfp_namespace: str, service_account: str, launcher: str = "pytorchjob") -> Check:
    from kubernetes import client

    user = f"system:serviceaccount:{kfp_namespace}:{service_account}"
    name = f"RBAC of {kfp_namespace}/{service_account} in {namespace}"
    fix = ("kubectl apply -k k8s/overlays/onprem-a100 (RoleBinding medrl-launcher); for multi-user Kubeflow set its "
           "subject to the profile's service account (default-editor)")  # fmt: skip
    authz = client.AuthorizationV1Api(api)
    missing = []
    for group, resource, sub, verb in TRAINJOB_VERBS if launcher == "trainjob" else LAUNCHER_VERBS:
        attrs = client.V1ResourceAttributes(
            namespace=namespace, group=group, resource=resource, subresource=sub or None, verb=verb
        )
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(user=user, resource_attributes=attrs)
        )
        try:
            allowed = authz.create_subject_access_review(review).status.allowed
        except Exception as err:
            return Check(name, False, f"cannot ask the API server: {str(err)[:120]}",
                         "run doctor with a kubeconfig allowed to create subjectaccessreviews")  # fmt: skip
        if not allowed:
            missing.append(f"{verb} {resource}{'/' + sub if sub else ''}")
    if missing:
        return Check(name, False, "may not " + ", ".join(missing), fix)
    if launcher == "trainjob":
        return Check(name, True, "may create/get/list/watch/delete trainjobs, get trainingruntimes, read pods, their "
                     "logs and events")  # fmt: skip
    return Check(name, True, "may create/get/list/watch/delete pytorchjobs and read pods and their logs")


def _secret_check(core, namespace: str, secret: str) -> Check:
    name = f"store Secret {namespace}/{secret}"
    fix = (f"kubectl -n {namespace} create secret generic {secret} --from-literal=accesskey=... "
           "--from-literal=secretkey=...")  # fmt: skip
    try:
        found = core.read_namespaced_secret(secret, namespace)
    except Exception as err:
        detail = "does not exist" if _status(err) == 404 else f"cannot read it: {str(err)[:120]}"
        return Check(name, False, detail, fix)
    keys = set((found.data or {}).keys())
    if not {"accesskey", "secretkey"} <= keys:
        return Check(name, False, f"has keys {sorted(keys)}, needs accesskey and secretkey", fix)
    return Check(name, True, "has accesskey and secretkey")


def _store_endpoint(core, namespace: str) -> str:
    try:
        cm = core.read_namespaced_config_map("medrl-store", namespace)
        return (cm.data or {}).get("AWS_ENDPOINT_URL_S3", "")
    except Exception:
        return ""


def _endpoint_check(api, name: str, url: str) -> Check:
    import re
    from urllib.parse import urlparse

    path = ENDPOINTS[name][1]
    if not url:
        return Check(name, False, "no address known", ENDPOINT_FIXES[name])
    parsed = urlparse(url)
    base = parsed.path.rstrip("/")
    if name == "judge" and base.endswith("/v1"):
        base = base[: -len("/v1")]
    service = re.match(r"^([a-z0-9-]+)\.([a-z0-9-]+)\.svc(\.cluster\.local)?$", parsed.hostname or "")
    try:
        if service and not os.environ.get("KUBERNETES_SERVICE_HOST"):
            # Outside the cluster a Service name does not resolve: go through the API server's service proxy.
            svc, ns = service.group(1), service.group(2)
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            proxy = f"/api/v1/namespaces/{ns}/services/{parsed.scheme}:{svc}:{port}/proxy{base}{path}"
            api.call_api(proxy, "GET", auth_settings=["BearerToken"], _preload_content=False, _request_timeout=10)
            how = "through the API server's service proxy"
        else:
            import httpx

            status = httpx.get(f"{parsed.scheme}://{parsed.netloc}{base}{path}", timeout=10).status_code
            if status >= 500 or (status >= 400 and name != "store"):
                raise RuntimeError(f"HTTP {status}")
            how = f"HTTP {status}"
    except Exception as err:
        return Check(f"{name} reachable", False, f"{url}: {str(err).splitlines()[0][:160]}", ENDPOINT_FIXES[name])
    return Check(f"{name} reachable", True, f"{url} ({how})")


def _gpu_check(core, gpus_per_node: int) -> Check:
    name = "GPUs schedulable"
    fix = ("install the NVIDIA GPU Operator (device plugin), uncordon the GPU nodes, and check the node_selector and "
           "tolerations parameters match them")  # fmt: skip
    try:
        nodes = core.list_node().items
    except Exception as err:
        return Check(
            name, False, f"cannot list nodes: {str(err)[:120]}", "run doctor with a kubeconfig that may list nodes"
        )
    usable = []
    for node in nodes:
        ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
        gpus = int((node.status.allocatable or {}).get("nvidia.com/gpu", "0"))
        if ready and not node.spec.unschedulable and gpus >= max(gpus_per_node, 1):
            usable.append((node.metadata.name, gpus))
    if not usable:
        want = f">= {gpus_per_node}" if gpus_per_node else "any"
        return Check(name, False, f"no Ready, schedulable node with {want} nvidia.com/gpu ({len(nodes)} node(s))", fix)
    total = sum(g for _, g in usable)
    return Check(name, True, f"{len(usable)} node(s), {total} GPU(s): " + ", ".join(f"{n}={g}" for n, g in usable[:5]))


def _driver_check(core) -> Check:
    """Every Ready GPU node's driver, from GPU feature discovery's labels, against DRIVER_FLOOR."""
    name = f"NVIDIA driver >= {DRIVER_FLOOR} on GPU nodes"
    try:
        nodes = core.list_node().items
    except Exception as err:
        return Check(
            name, False, f"cannot list nodes: {str(err)[:120]}", "run doctor with a kubeconfig that may list nodes"
        )
    new: list[str] = []
    old: list[str] = []
    unknown: list[str] = []
    for node in nodes:
        ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
        if not ready or int((node.status.allocatable or {}).get("nvidia.com/gpu", "0")) < 1:
            continue
        labels = node.metadata.labels or {}
        major = next((labels[k] for k in DRIVER_LABELS if labels.get(k, "").isdigit()), None)
        if major is None:
            unknown.append(node.metadata.name)
        else:
            (new if int(major) >= DRIVER_FLOOR else old).append(f"{node.metadata.name}={major}")
    if old:
        return Check(name, False, "older driver on " + ", ".join(old[:5]), DRIVER_FIX)
    if not new:
        if not unknown:
            return Check(name, False, "no Ready GPU node", "see `GPUs schedulable`")
        return Check(name, False, f"no driver label ({DRIVER_LABELS[1]}) on " + ", ".join(unknown[:5]),
                     "enable GPU feature discovery (part of the NVIDIA GPU Operator), or check `nvidia-smi` on each "
                     f"GPU node shows driver {DRIVER_FLOOR} or newer")  # fmt: skip
    detail = ", ".join(new[:5]) + (f"; unlabelled: {', '.join(unknown[:5])}" if unknown else "")
    return Check(name, True, detail)
