"""The Kubeflow Trainer v2 backend: one TrainJob (`trainer.kubeflow.org/v1alpha1`) per arm, referencing a
(Cluster)TrainingRuntime with torchrun's ML policy (`torch-distributed` unless the spec names another).

The job is built as the API object and created with the kubernetes client, not through `kubeflow.trainer.
TrainerClient` (PyPI `kubeflow` 0.5): the SDK cannot express what the PyTorchJob path gives a training pod. Its
`CustomTrainerContainer.env` takes plain strings only (no `secretKeyRef` for the store's credentials, and the
Trainer webhook forbids env in a RuntimePatch of the `node` container), it has no `numProcPerNode` (its `auto`
starts one process per CPU on CPU nodes), its `list_jobs` cannot select by label (the exit handler's delete) and
its `get_job` reads the runtime cluster-wide on every poll (a ClusterRole the launcher would otherwise not need).

Everything the runtime does not carry is patched in through `spec.runtimePatches` (Trainer >= 2.2): Pod Security
`restricted` for every container of every replicated job of the runtime, /dev/shm and /tmp volumes, node
selector, tolerations, service account, labels.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from medrl.cluster.pytorchjob import NCCL_ENV, UID, _snake, label_value, pod_labels
from medrl.cluster.spec import JUDGE_KEY, JUDGE_KEY_SECRET, PIPELINE_RUN_LABEL, LaunchError, TrainSpec
from medrl.tracking import CREDENTIALS_KEYS, CREDENTIALS_SECRET

log = logging.getLogger("medrl")

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
PLURAL = "trainjobs"
NODE = "node"  # the trainer's replicated job and its container, by Trainer's convention
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
PATCH_MANAGER = "medrl.io/launcher"  # our entry among runtimePatches; Kueue and others keep theirs
MEDRL_RUNTIME = "medrl-torch-distributed"  # k8s/components/trainer: adds the metrics port and envFrom
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_RJOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DOMAIN_PATH = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/[A-Za-z0-9/_.~%!$&'()*+,;=:@-]+$"
)
FINAL_EXIT_CODES = (1, 2, 126, 127)  # medrl.cluster.entrypoint.FINAL, a usage error, not executable, not found
TORCHRUN_ENV = {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
# The store settings of the medrl-store ConfigMap, one by one: a stock runtime has no envFrom for it.
STORE_SETTINGS = (
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CA_BUNDLE", "MEDRL_STORE",
    "MEDRL_STORE_RETRY_SECONDS", "MEDRL_STORE_WORKERS", "MEDRL_S3_PART_SIZE", "MEDRL_S3_TLS_VERIFY", "HF_HUB_OFFLINE",
    "MEDRL_PUSHGATEWAY_URL",
)  # fmt: skip
TRAINER_FIX = (
    "install Kubeflow Trainer v2.3: kubectl apply --server-side -k "
    '"https://github.com/kubeflow/trainer.git/manifests/overlays/manager?ref=v2.3.0"'
)
RUNTIMES_FIX = (
    "install Trainer's runtimes (kubectl apply --server-side -k "
    '"https://github.com/kubeflow/trainer.git/manifests/overlays/runtimes?ref=v2.3.0") or medrl\'s '
    "(kubectl apply -k k8s/components/trainer), or set training_runtime to one that exists"
)


@dataclass
class Runtime:
    """What the launcher needs to know of a (Cluster)TrainingRuntime: its kind and the containers its replicated
    jobs run, so that every one of them is patched."""

    name: str
    kind: str = "ClusterTrainingRuntime"
    containers: dict[str, list[str]] = field(default_factory=lambda: {NODE: [NODE]})
    init_containers: dict[str, list[str]] = field(default_factory=dict)
    metrics_port: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Runtime:
        containers, inits, metrics = {}, {}, False
        for rjob in ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("replicatedJobs") or []:
            pod = ((rjob.get("template") or {}).get("spec") or {}).get("template", {}).get("spec") or {}
            containers[rjob["name"]] = [c["name"] for c in pod.get("containers") or []]
            inits[rjob["name"]] = [c["name"] for c in pod.get("initContainers") or []]
            for c in pod.get("containers") or []:
                metrics |= c["name"] == NODE and any(p.get("name") == "metrics" for p in c.get("ports") or [])
        return cls(doc["metadata"]["name"], doc.get("kind", "ClusterTrainingRuntime"), containers, inits, metrics)


def _restricted_container() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": UID,
        "runAsGroup": UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _restricted_pod() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"}}  # fmt: skip


def _trainer(spec: TrainSpec) -> dict[str, Any]:
    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = str(spec.gpus_per_node)
    env: list[dict[str, Any]] = [
        {"name": "MEDRL_DEEPSPEED", "value": "zero2" if spec.gpus_per_node else "none"},
        {"name": "MEDRL_METRICS_PORT", "value": str(spec.metrics_port)},
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": name, "value": value} for name, value in NCCL_ENV.items()),
        *({"name": name, "value": value} for name, value in spec.restart_env().items()),
    ]
    for key, var in (("accesskey", "AWS_ACCESS_KEY_ID"), ("secretkey", "AWS_SECRET_ACCESS_KEY")):
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": spec.store_secret, "key": key,
                                                                 "optional": True}}})  # fmt: skip
    for key, var in CREDENTIALS_KEYS.items():  # MLflow's, for the arm's tracking (rank 0)
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": CREDENTIALS_SECRET, "key": key,
                                                                 "optional": True}}})  # fmt: skip
    for key, var in JUDGE_KEY.items():  # the semantic reward's judge, where it asks for a key
        env.append({"name": var, "valueFrom": {"secretKeyRef": {"name": JUDGE_KEY_SECRET, "key": key,
                                                                 "optional": True}}})  # fmt: skip
    for key in STORE_SETTINGS:
        env.append({"name": key, "valueFrom": {"configMapKeyRef": {"name": spec.store_config, "key": key,
                                                                    "optional": True}}})  # fmt: skip
    return {
        "image": spec.image,
        "command": ["medrl", "train-arm", "--run", spec.run_uri, "--arm", spec.arm],
        "numNodes": spec.nodes,
        # Explicit: Trainer's `auto` would start one process per CPU on a CPU node.
        "numProcPerNode": spec.nproc_per_node,
        # Requests equal limits: Guaranteed QoS, so the kubelet evicts a training pod last.
        "resourcesPerNode": {"requests": dict(limits), "limits": limits},
        "env": env,
    }


def _pod_patch(spec: TrainSpec, runtime: Runtime, rjob: str) -> dict[str, Any]:
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "scratch", "mountPath": "/tmp"}]

    def container(name: str) -> dict[str, Any]:
        return {"name": name, "securityContext": _restricted_container(), "volumeMounts": mounts}

    pod: dict[str, Any] = {
        "serviceAccountName": spec.service_account,
        "securityContext": _restricted_pod(),
        "volumes": [
            # NCCL and the data loaders share tensors through /dev/shm; the runtime's 64 MiB default is too small.
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm_size}},
            {"name": "scratch", "emptyDir": {"sizeLimit": spec.scratch_size}},
        ],
        "containers": [container(name) for name in runtime.containers.get(rjob, [])],
    }
    if runtime.init_containers.get(rjob):
        pod["initContainers"] = [container(name) for name in runtime.init_containers[rjob]]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [_camel(_snake(t)) for t in spec.tolerations]
    meta = {"labels": pod_labels(spec), "annotations": {"sidecar.istio.io/inject": "false"}}
    return {"name": rjob, "template": {"spec": {"template": {"metadata": meta, "spec": pod}}}}


def _camel(toleration: dict[str, Any]) -> dict[str, Any]:
    return {("tolerationSeconds" if k == "toleration_seconds" else k): v for k, v in toleration.items()}


def build_trainjob(spec: TrainSpec, runtime: Runtime | None = None) -> dict[str, Any]:
    """The TrainJob for one arm, as the API server receives it; `runtime` is the one it references (looked up by
    the launcher; without it: the stock ClusterTrainingRuntime shape, one `node` job with a `node` container)."""
    runtime = runtime or Runtime(spec.training_runtime)
    patch = {
        "manager": PATCH_MANAGER,
        "trainingRuntimeSpec": {
            "template": {
                "metadata": {"labels": pod_labels(spec)},
                "spec": {"replicatedJobs": [_pod_patch(spec, runtime, rjob) for rjob in runtime.containers]},
            }
        },
    }
    job_spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": GROUP, "kind": runtime.kind, "name": runtime.name},
        "trainer": _trainer(spec),
        "runtimePatches": [patch],
    }
    if spec.active_deadline_seconds:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    meta = {"name": spec.job_name, "namespace": spec.namespace, "labels": pod_labels(spec)}
    return {"apiVersion": API_VERSION, "kind": "TrainJob", "metadata": meta, "spec": job_spec}


def admission_errors(job: dict[str, Any], runtime: Runtime | None = None) -> list[str]:
    """The Trainer v2.3 admission rules a medrl TrainJob could break that the CRD's OpenAPI schema does not state,
    so a bad job fails here with a clear message. What the schema states (runtimeRef.name required,
    activeDeadlineSeconds >= 1, no unknown field such as the removed podTemplateOverrides) is left to the API server;
    tests validate the built jobs against the upstream schema. Checked here:
    - metadata.name an RFC 1035 label of at most 63 characters (a CEL rule of the CRD, not an OpenAPI one);
    - runtimeRef.kind one of the two runtime kinds, trainer.numNodes / numProcPerNode >= 1, no torchrun env in
      trainer.env, runtimePatches' manager a domain-prefixed path, no env in a patch of the node or initializer
      containers (the TrainJob webhook and the torch plugin);
    - every replicated job and container a patch names exists in the referenced runtime (runtime <-> job)."""
    errors = []
    name = (job.get("metadata") or {}).get("name") or ""
    if len(name) > 63 or not DNS1035.match(name):
        errors.append(f"metadata.name {name!r}: must be an RFC 1035 DNS label of at most 63 characters")
    spec = job.get("spec") or {}
    ref = spec.get("runtimeRef") or {}
    if ref.get("kind") not in (None, "TrainingRuntime", "ClusterTrainingRuntime"):
        errors.append(f"spec.runtimeRef.kind {ref['kind']!r}: must be TrainingRuntime or ClusterTrainingRuntime")
    trainer = spec.get("trainer") or {}
    for key in ("numNodes", "numProcPerNode"):
        if trainer.get(key) is not None and trainer[key] < 1:
            errors.append(f"spec.trainer.{key}: must be at least 1")
    reserved = sorted({e["name"] for e in trainer.get("env") or []} & TORCHRUN_ENV)
    if reserved:
        errors.append(f"spec.trainer.env: must not have reserved envs, invalid envs configured: {reserved}")
    for patch in spec.get("runtimePatches") or []:
        if not DOMAIN_PATH.match(patch.get("manager") or ""):
            errors.append(f"spec.runtimePatches.manager {patch.get('manager')!r}: must be a domain-prefixed path")
        template = (patch.get("trainingRuntimeSpec") or {}).get("template") or {}
        for rjob in (template.get("spec") or {}).get("replicatedJobs") or []:
            pod = (((rjob.get("template") or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
            if runtime and rjob.get("name") not in runtime.containers:
                errors.append(f"spec.runtimePatches: replicated job {rjob.get('name')!r} is not in runtime "
                              f"{runtime.name} (it has {', '.join(runtime.containers)})")  # fmt: skip
                continue
            known_by_kind: dict[str, dict[str, list[str]] | None] = {
                "containers": runtime.containers if runtime else None,
                "initContainers": runtime.init_containers if runtime else None,
            }
            for kind, known in known_by_kind.items():
                for c in pod.get(kind) or []:
                    if known is not None and c["name"] not in known.get(rjob["name"], []):
                        errors.append(f"spec.runtimePatches: {kind[:-1]} {c['name']!r} is not in the runtime's "
                                      f"{rjob['name']} job")  # fmt: skip
                    if c.get("env") and c["name"] in (NODE, "dataset-initializer", "model-initializer"):
                        errors.append(f"spec.runtimePatches: must not have envs for the {c['name']} container")
    return errors


# ---------------------------------------------------------------------------------------------- the API


def api_client():
    """The kubernetes client: KUBECONFIG when set (read now, not at import), else the pod's service account."""
    from kubernetes import client, config

    if os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG") or None)
    cfg = client.Configuration()
    config.load_incluster_config(client_configuration=cfg)
    return client.ApiClient(cfg)


def crd_installed(api=None) -> bool:
    """Whether the API server serves trainjobs.trainer.kubeflow.org (discovery; any authenticated user may ask)."""
    try:
        api = api or api_client()
        doc = api.call_api(f"/apis/{API_VERSION}", "GET", response_type="object", auth_settings=["BearerToken"],
                           _return_http_data_only=True, _request_timeout=10)  # fmt: skip
    except Exception as err:  # not served, unreachable, no kubeconfig: no TrainJob here
        log.debug("TrainJob CRD probe: %s", err)
        return False
    return PLURAL in {r.get("name") for r in (doc or {}).get("resources", [])}


def _status(err: Exception) -> int | None:
    return getattr(err, "status", None)


def find_runtime(api, namespace: str, name: str) -> Runtime:
    """The runtime a TrainJob may reference by this name: a TrainingRuntime in the namespace first, else a
    ClusterTrainingRuntime (the order of Trainer's SDK). A missing runtime is a LaunchError naming it and the fix."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api)
    try:
        return Runtime.from_doc(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "trainingruntimes",
                                                                    name))  # fmt: skip
    except client.ApiException as err:
        if _status(err) not in (403, 404):
            raise LaunchError(f"could not read TrainingRuntime {namespace}/{name}: {err.reason}") from None
    try:
        return Runtime.from_doc(custom.get_cluster_custom_object(GROUP, VERSION, "clustertrainingruntimes", name))
    except client.ApiException as err:
        if _status(err) == 403:
            # Reading cluster-scoped runtimes needs a ClusterRole the launcher is not given; Trainer's webhook
            # rejects a TrainJob whose runtime is missing, so creating it still checks.
            log.info("may not read ClusterTrainingRuntime %s; Trainer's webhook checks that it exists", name)
            return Runtime(name)
        if _status(err) == 404:
            raise LaunchError(
                f"training_runtime {name!r}: no TrainingRuntime {namespace}/{name} and no ClusterTrainingRuntime "
                f"{name}. Fix: {RUNTIMES_FIX}"
            ) from None
        raise LaunchError(f"could not read ClusterTrainingRuntime {name}: {err.reason}") from None


def _owned_by(name: str, job: str) -> bool:
    # The JobSet has the job's name; its Jobs and pods are named <job>-<replicated job>-...
    return name == job or name.startswith(f"{job}-")


class TrainJobHandle:
    def __init__(self, api, name: str, namespace: str, poll_s: float = 10.0, timeout_s: int = 7 * 24 * 3600):
        from kubernetes import client

        self.api, self.name, self.namespace = api, name, namespace
        self.custom, self.core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        self.poll_s, self.timeout_s = poll_s, timeout_s

    def get(self) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name)

    def conditions(self) -> list[dict[str, Any]]:
        return [c for c in ((self.get().get("status") or {}).get("conditions") or []) if c.get("status") == "True"]

    def _node_pod(self) -> Any:  # a kubernetes V1Pod, or None
        """Rank 0's pod (the first `node` pod of the JobSet), newest first: after a restart, the live one."""
        selector = f"{JOBSET_NAME_LABEL}={self.name},{JOBSET_RJOB_LABEL}={NODE},{JOB_INDEX_LABEL}=0"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        pods.sort(key=lambda p: p.metadata.creation_timestamp or 0, reverse=True)
        return pods[0] if pods else None

    def _stream_log(self, pod: str) -> None:
        from kubernetes import watch

        for line in watch.Watch().stream(self.core.read_namespaced_pod_log, name=pod, namespace=self.namespace,
                                         container=NODE, follow=True):  # fmt: skip
            print(f"[Pod {pod}]: {line}", flush=True)

    def wait(self) -> None:
        """Stream rank 0's log while it runs (again after each restart), then report how the job ended."""
        deadline, streamed = time.monotonic() + self.timeout_s, set[str]()
        while time.monotonic() < deadline:
            states = {c["type"] for c in self.conditions()}
            if states & {"Complete", "Failed"}:
                if not streamed:
                    self._print_log()  # it ended between two polls: show what it wrote all the same
                if "Complete" in states:
                    return
                raise LaunchError(
                    f"TrainJob {self.namespace}/{self.name} did not succeed: {self.last_condition()}. Rank 0's log "
                    f"is above; events:\n{self.events() or '  (none)'}"
                )
            pod = self._node_pod()
            if pod is not None and pod.status and pod.status.phase == "Running" and pod.metadata.uid not in streamed:
                streamed.add(pod.metadata.uid)
                try:
                    self._stream_log(pod.metadata.name)
                except Exception as err:  # a pod that restarts mid-stream; the next poll picks up the new one
                    log.info("log stream of %s ended: %s", pod.metadata.name, err)
                continue
            time.sleep(self.poll_s)
        raise LaunchError(f"TrainJob {self.namespace}/{self.name} did not finish within {self.timeout_s} s. "
                          f"Events:\n{self.events() or '  (none)'}")  # fmt: skip

    def _print_log(self) -> None:
        try:
            pod = self._node_pod()
            if pod is not None:
                text = self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container=NODE)
                for line in (text or "").splitlines():
                    print(f"[Pod {pod.metadata.name}]: {line}", flush=True)
        except Exception as err:  # the pod may be gone already; the condition and events still tell
            log.info("no log of %s: %s", self.name, getattr(err, "reason", err))

    def last_condition(self) -> str:
        try:
            conditions = self.conditions()
        except Exception:
            return ""
        last = conditions[-1] if conditions else {}
        return " ".join(str(last[k]) for k in ("type", "reason", "message") if last.get(k))

    def events(self, limit: int = 15) -> str:
        """The Kubernetes events of the TrainJob, its JobSet, Jobs and pods (they all carry the job's name)."""
        try:
            items = self.core.list_namespaced_event(self.namespace).items
        except Exception as err:
            return f"  (cannot list events: {getattr(err, 'reason', err)})"
        mine = [e for e in items if e.involved_object and _owned_by(e.involved_object.name or "", self.name)]
        mine.sort(key=lambda e: e.last_timestamp or e.first_timestamp or e.event_time or 0)
        return "\n".join(f"  {e.type} {e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}"
                         for e in mine[-limit:])  # fmt: skip

    def delete(self) -> None:
        from kubernetes import client

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, self.name,
                                                        propagation_policy="Background")  # fmt: skip
        except client.ApiException as err:
            if _status(err) != 404:
                log.warning("could not delete TrainJob %s/%s: %s", self.namespace, self.name, err.reason)


class TrainJobLauncher:
    def __init__(self, api=None):
        self._api = api

    def submit(self, spec: TrainSpec) -> TrainJobHandle:
        from kubernetes import client

        api = self._api or api_client()
        # Everything is checked before anything is created: the CRD, the runtime, the job's admission rules.
        if not crd_installed(api):
            raise LaunchError(f"launcher=trainjob: the API server does not serve trainjobs.{GROUP} ({API_VERSION}). "
                              f"Fix: {TRAINER_FIX}, or use launcher=pytorchjob")  # fmt: skip
        runtime = find_runtime(api, spec.namespace, spec.training_runtime)
        job = build_trainjob(spec.launched(), runtime)
        errors = admission_errors(job, runtime)
        if errors:
            raise LaunchError("the TrainJob would be rejected:\n  " + "\n  ".join(errors))
        if not runtime.metrics_port and runtime.kind == "ClusterTrainingRuntime":
            log.info("runtime %s has no container port `metrics`: Prometheus will not scrape training (runtime %s "
                     "in k8s/components/trainer has it)", runtime.name, MEDRL_RUNTIME)  # fmt: skip
        handle = TrainJobHandle(api, spec.job_name, spec.namespace, poll_s=spec.poll_seconds)
        if spec.active_deadline_seconds:
            handle.timeout_s = spec.active_deadline_seconds + 600
        custom = client.CustomObjectsApi(api)
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, job)
        except client.ApiException as err:
            if _status(err) != 409:
                raise LaunchError(_create_failure(spec, err)) from None
            # A retried pipeline task or a restarted launcher: the job of this run and arm exists.
            if "Failed" in {c["type"] for c in handle.conditions()}:
                log.info("TrainJob %s failed before (%s); starting it again", spec.job_name, handle.last_condition())
                handle.delete()
                _wait_gone(handle, spec)
                custom.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, job)
            else:
                log.info("TrainJob %s exists; following it", spec.job_name)
        log.info("TrainJob %s/%s (runtime %s %s): %d node(s) x %d process(es)", spec.namespace, spec.job_name,
                 runtime.kind, runtime.name, spec.nodes, spec.nproc_per_node)  # fmt: skip
        return handle

    def delete_jobs_of_run(self, pipeline_run: str, namespace: str) -> list[str]:
        return delete_jobs_of_run(pipeline_run, namespace, api=self._api)


def _create_failure(spec: TrainSpec, err) -> str:
    where = f"TrainJob {spec.namespace}/{spec.job_name}"
    status = _status(err)
    if status == 404:
        return f"could not create {where}: the API server does not serve trainjobs.{GROUP}. Fix: {TRAINER_FIX}"
    if status == 403:
        return (f"could not create {where}: the launcher's service account may not create trainjobs in namespace "
                f"{spec.namespace}. Fix: kubectl apply -k k8s/overlays/<site> (Role and RoleBinding medrl-launcher), "
                "then medrl doctor")  # fmt: skip
    body = getattr(err, "body", "") or ""
    return f"could not create {where}: {err.reason} {body[:500]}".strip()


def _wait_gone(handle: TrainJobHandle, spec: TrainSpec, timeout_s: float = 300) -> None:
    from kubernetes import client

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            handle.get()
        except client.ApiException as err:
            if _status(err) == 404:
                return
        time.sleep(min(spec.poll_seconds, 5))
    raise LaunchError(f"TrainJob {spec.namespace}/{spec.job_name} was not deleted within {timeout_s:.0f} s")


def delete_jobs_of_run(pipeline_run: str, namespace: str, api=None) -> list[str]:
    """Delete every TrainJob labelled with this pipeline run (the pipeline's exit handler)."""
    from kubernetes import client

    custom = client.CustomObjectsApi(api or api_client())
    selector = f"{PIPELINE_RUN_LABEL}={label_value(pipeline_run)}"
    names = []
    for job in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=selector)[
        "items"
    ]:
        name = job["metadata"]["name"]
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
            names.append(name)
        except client.ApiException as err:
            if _status(err) != 404:
                raise
    log.info("deleted %d TrainJob(s) matching %s", len(names), selector)
    return names


# ---------------------------------------------------------------------------------------------- the runtime


def build_runtime(name: str = MEDRL_RUNTIME, namespace: str = "medrl", store_config: str = "medrl-store",
                  metrics_port: int = 9400, max_restarts: int = 20) -> dict[str, Any]:  # fmt: skip
    """medrl's TrainingRuntime: torchrun's ML policy plus what a TrainJob cannot patch in (envFrom the store's
    settings, the named metrics port Prometheus scrapes, no API token, a restart budget). Namespaced, so the
    launcher reads it with its Role; the TrainJob's patches add the rest."""
    container = {
        "name": NODE,
        "image": "ghcr.io/medrl/medrl:0.1.0",  # replaced by every TrainJob's spec.trainer.image
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"configMapRef": {"name": store_config, "optional": True}}],
        "ports": [{"name": "metrics", "containerPort": metrics_port, "protocol": "TCP"}],
        "securityContext": _restricted_container(),
    }
    pod = {
        "restartPolicy": "Never",  # a pod failure policy needs it; a restart is the JobSet's, of the whole gang
        "automountServiceAccountToken": False,  # training talks to the store, never to the API server
        "securityContext": _restricted_pod(),
        "containers": [container],
    }
    rjob = {
        "name": NODE,
        "template": {
            "metadata": {"labels": {ANCESTOR_LABEL: "trainer"}},
            "spec": {
                # Any failed pod fails its Job at once; exit codes below 128 (train-arm's 1: an error a restart cannot
                # fix, or its restart budget spent; 2, 126, 127: the command itself is wrong) fail it as final.
                "backoffLimit": 0,
                "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
                    "containerName": NODE, "operator": "In", "values": list(FINAL_EXIT_CODES)}}]},
                "template": {"spec": pod},
            },
        },
    }  # fmt: skip
    meta = {"name": name, "namespace": namespace, "labels": {"trainer.kubeflow.org/framework": "torch",
                                                             "app.kubernetes.io/name": "medrl"}}  # fmt: skip
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainingRuntime",
        "metadata": meta,
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {
                "spec": {
                    # A final exit ends the JobSet; any other failure (a node lost, a rank killed, a crash: exit >= 128)
                    # restarts the whole gang, which resumes from the store. medrl's own budget (train-arm exits 1
                    # after 3 failed attempts without a newer checkpoint) ends a crash loop; maxRestarts is a
                    # backstop for long runs that make progress between failures.
                    "failurePolicy": {
                        "maxRestarts": max_restarts,
                        "rules": [
                            {"name": "final-exit", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}
                        ],
                    },
                    "replicatedJobs": [rjob],
                }
            },
        },
    }


def to_yaml(doc: dict[str, Any]) -> str:
    """A manifest as YAML that yamllint accepts (sequences indented under their key)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    return yaml.dump(doc, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)
