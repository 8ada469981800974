"""The PyTorchJob backend: build the job from the kubeflow-training SDK's models, check it against the operator's
admission rules, create it, stream the master's log, wait for its conditions, delete it.

Pods of the job meet Pod Security `restricted` and run `medrl train-arm`, which starts one process per GPU. A job
of several nodes gets the operator's `init-pytorch` init container in its Worker pods; k8s/site-steps/
training-operator-init-container.yaml makes that one restricted too, from the medrl image (a site step).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from medrl.cluster.spec import (
    ARM_LABEL,
    JUDGE_KEY,
    JUDGE_KEY_SECRET,
    PIPELINE_RUN_LABEL,
    TRAINING_LABELS,
    LaunchError,
    TrainSpec,
)
from medrl.tracking import CREDENTIALS_KEYS, CREDENTIALS_SECRET

log = logging.getLogger("medrl")

CONTAINER = "pytorch"  # the operator finds the training container by this name
RESTART_POLICIES = {"Always", "OnFailure", "Never", "ExitCode"}
CLEAN_POD_POLICIES = {"All", "Running", "None"}
MANAGED_BY = {"kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue"}
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
UID = 1000  # the image's non-root user

# NCCL in every training container (the TrainJob backend sets the same). A failed or timed-out collective tears the
# rank down (TORCH_NCCL_ASYNC_ERROR_HANDLING=1) instead of leaving every rank hanging: the entrypoint then exits 134
# and the job restarts from the newest complete checkpoint. The collective timeout is the trainer's `ddp_timeout`
# (1800 s). NCCL picks the pod's network by itself (it skips lo and docker*); RDMA (InfiniBand/RoCE through an RDMA
# device plugin and NCCL_IB_HCA, NCCL_SOCKET_IFNAME for a secondary network) is a site option: see the README.
NCCL_ENV = {"NCCL_DEBUG": "WARN", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}


def label_value(text: str) -> str:
    """A Kubernetes label value (<= 63 characters of [A-Za-z0-9-_.], alphanumeric at both ends)."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def pod_labels(spec: TrainSpec) -> dict[str, str]:
    labels = {**TRAINING_LABELS, ARM_LABEL: label_value(spec.arm)}
    if spec.pipeline_run:
        labels[PIPELINE_RUN_LABEL] = label_value(spec.pipeline_run)
    return labels


def _container(spec: TrainSpec):
    from kubernetes import client as k

    limits = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = str(spec.gpus_per_node)
    env = [
        k.V1EnvVar(name="MEDRL_DEEPSPEED", value="zero2" if spec.gpus_per_node else "none"),
        k.V1EnvVar(name="MEDRL_METRICS_PORT", value=str(spec.metrics_port)),
        k.V1EnvVar(name="HOME", value="/tmp"),
        k.V1EnvVar(name="TMPDIR", value="/tmp"),
        k.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
        *(k.V1EnvVar(name=name, value=value) for name, value in NCCL_ENV.items()),
        *(k.V1EnvVar(name=name, value=value) for name, value in spec.restart_env().items()),
    ]
    for key, var in (("accesskey", "AWS_ACCESS_KEY_ID"), ("secretkey", "AWS_SECRET_ACCESS_KEY")):
        ref = k.V1SecretKeySelector(name=spec.store_secret, key=key, optional=True)
        env.append(k.V1EnvVar(name=var, value_from=k.V1EnvVarSource(secret_key_ref=ref)))
    for key, var in CREDENTIALS_KEYS.items():  # MLflow's, for the arm's tracking (rank 0)
        ref = k.V1SecretKeySelector(name=CREDENTIALS_SECRET, key=key, optional=True)
        env.append(k.V1EnvVar(name=var, value_from=k.V1EnvVarSource(secret_key_ref=ref)))
    for key, var in JUDGE_KEY.items():  # the semantic reward's judge, where it asks for a key
        ref = k.V1SecretKeySelector(name=JUDGE_KEY_SECRET, key=key, optional=True)
        env.append(k.V1EnvVar(name=var, value_from=k.V1EnvVarSource(secret_key_ref=ref)))
    return k.V1Container(
        name=CONTAINER,
        image=spec.image,
        image_pull_policy="IfNotPresent",
        command=["medrl", "train-arm", "--run", spec.run_uri, "--arm", spec.arm],
        env=env,
        env_from=[k.V1EnvFromSource(config_map_ref=k.V1ConfigMapEnvSource(name=spec.store_config, optional=True))],
        ports=[k.V1ContainerPort(name="metrics", container_port=spec.metrics_port, protocol="TCP")],
        # Requests equal limits: Guaranteed QoS, so the kubelet evicts a training pod last.
        resources=k.V1ResourceRequirements(requests=dict(limits), limits=limits),
        security_context=k.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            run_as_non_root=True,
            run_as_user=UID,
            run_as_group=UID,
            capabilities=k.V1Capabilities(drop=["ALL"]),
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        volume_mounts=[
            k.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
            k.V1VolumeMount(name="scratch", mount_path="/tmp"),
        ],
    )


def _pod_template(spec: TrainSpec):
    from kubernetes import client as k

    pod = k.V1PodSpec(
        service_account_name=spec.service_account,
        automount_service_account_token=False,  # training talks to the store, never to the API server
        security_context=k.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=UID,
            run_as_group=UID,
            fs_group=UID,
            seccomp_profile=k.V1SeccompProfile(type="RuntimeDefault"),
        ),
        node_selector=dict(spec.node_selector) or None,
        tolerations=[k.V1Toleration(**_snake(t)) for t in spec.tolerations] or None,
        containers=[_container(spec)],
        volumes=[
            # NCCL and the data loaders share tensors through /dev/shm; the runtime's 64 MiB default is too small.
            k.V1Volume(name="dshm", empty_dir=k.V1EmptyDirVolumeSource(medium="Memory", size_limit=spec.shm_size)),
            k.V1Volume(name="scratch", empty_dir=k.V1EmptyDirVolumeSource(size_limit=spec.scratch_size)),
        ],
    )
    meta = k.V1ObjectMeta(labels=pod_labels(spec), annotations={"sidecar.istio.io/inject": "false"})
    return k.V1PodTemplateSpec(metadata=meta, spec=pod)


def _snake(toleration: dict[str, Any]) -> dict[str, Any]:
    names = {"key": "key", "operator": "operator", "value": "value", "effect": "effect"}
    names |= {"tolerationSeconds": "toleration_seconds", "toleration_seconds": "toleration_seconds"}
    unknown = sorted(set(toleration) - set(names))
    if unknown:
        raise ValueError(f"tolerations: unknown field(s) {', '.join(unknown)}; a toleration has {', '.join(names)}")
    return {names[key]: value for key, value in toleration.items()}


def build_pytorchjob(spec: TrainSpec):
    """The PyTorchJob for one arm: a Master, plus Workers when it spans several nodes."""
    from kubeflow.training import models as m
    from kubernetes import client as k

    replicas = {
        "Master": m.KubeflowOrgV1ReplicaSpec(replicas=1, restart_policy="ExitCode", template=_pod_template(spec))
    }
    if spec.nodes > 1:
        replicas["Worker"] = m.KubeflowOrgV1ReplicaSpec(
            replicas=spec.nodes - 1, restart_policy="ExitCode", template=_pod_template(spec)
        )
    run_policy = m.KubeflowOrgV1RunPolicy(
        clean_pod_policy="Running",
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        backoff_limit=spec.backoff_limit,
        active_deadline_seconds=spec.active_deadline_seconds or None,
    )
    return m.KubeflowOrgV1PyTorchJob(
        api_version="kubeflow.org/v1",
        kind="PyTorchJob",
        metadata=k.V1ObjectMeta(name=spec.job_name, namespace=spec.namespace, labels=pod_labels(spec)),
        spec=m.KubeflowOrgV1PyTorchJobSpec(
            nproc_per_node=str(spec.nproc_per_node), pytorch_replica_specs=replicas, run_policy=run_policy
        ),
    )


def to_dict(job) -> dict[str, Any]:
    """The job as the API server receives it (camelCase keys, no nulls)."""
    from kubeflow.training.api_client import ApiClient

    return ApiClient().sanitize_for_serialization(job)


def admission_errors(job: dict[str, Any]) -> list[str]:
    """The training operator v1.9's admission rules for a PyTorchJob that its CRD schema does not state (the schema
    gives types and that pytorchReplicaSpecs and each container's name are required; tests validate the built jobs
    against it), so a bad job fails here with a clear message instead of in the API server. All from its validating
    webhook: metadata.name a DNS-1035 label; replica types Master and Worker only, each with containers, an image in
    every one, one named `pytorch`; Master replicas exactly 1, Worker at least 1; restartPolicy, runPolicy's
    cleanPodPolicy and managedBy from their sets, its counts >= 0; nprocPerNode auto, cpu, gpu or a positive
    integer; an elasticPolicy needs Workers and excludes its nProcPerNode beside spec.nprocPerNode (cross-field)."""
    errors = []
    name = (job.get("metadata") or {}).get("name") or ""
    if len(name) > 63 or not DNS1035.match(name):
        errors.append(f"metadata.name {name!r}: must be a DNS-1035 label (a-z, 0-9, '-', starting with a letter)")
    spec = job.get("spec") or {}
    replicas = spec.get("pytorchReplicaSpecs") or {}
    for rtype, rspec in replicas.items():
        where = f"spec.pytorchReplicaSpecs[{rtype}]"
        if rtype not in ("Master", "Worker"):
            errors.append(f"{where}: replica type must be Master or Worker")
        rspec = rspec or {}
        containers = ((rspec.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            errors.append(f"{where}.template.spec.containers: must be specified")
        for i, container in enumerate(containers):
            if not container.get("image"):
                errors.append(f"{where}.template.spec.containers[{i}].image: must be required")
        if not any(c.get("name") == CONTAINER for c in containers):
            errors.append(f"{where}.template.spec.containers: must have at least one container with name {CONTAINER}")
        count = rspec.get("replicas")
        if rtype == "Master" and count != 1:
            errors.append(f"{where}.replicas: must be 1")
        if rtype == "Worker" and count is not None and count < 1:
            errors.append(f"{where}.replicas: must be at least 1")
        policy = rspec.get("restartPolicy")
        if policy is not None and policy not in RESTART_POLICIES:
            errors.append(f"{where}.restartPolicy {policy!r}: must be one of {sorted(RESTART_POLICIES)}")
    elastic = spec.get("elasticPolicy")
    if elastic is not None:
        if "Worker" not in replicas:
            errors.append("spec.pytorchReplicaSpecs[Worker]: must be configured if elastic policy is used")
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            errors.append("spec.elasticPolicy.nProcPerNode: must not be used with spec.nprocPerNode")
    nproc = spec.get("nprocPerNode")
    if nproc is not None and not (nproc in ("auto", "cpu", "gpu") or (str(nproc).isdigit() and int(nproc) > 0)):
        errors.append(f"spec.nprocPerNode {nproc!r}: must be auto, cpu, gpu or a positive integer")
    run_policy = spec.get("runPolicy") or {}
    if run_policy.get("managedBy") not in (None, "", *MANAGED_BY):
        errors.append(f"spec.runPolicy.managedBy {run_policy['managedBy']!r}: must be one of {sorted(MANAGED_BY)}")
    if run_policy.get("cleanPodPolicy") not in (None, *CLEAN_POD_POLICIES):
        errors.append(f"spec.runPolicy.cleanPodPolicy: must be one of {sorted(CLEAN_POD_POLICIES)}")
    for key in ("ttlSecondsAfterFinished", "backoffLimit", "activeDeadlineSeconds"):
        if run_policy.get(key) is not None and run_policy[key] < 0:
            errors.append(f"spec.runPolicy.{key}: must be greater than or equal to 0")
    return errors


def _client(namespace: str):
    import os

    from kubeflow.training import TrainingClient

    # The kubernetes client reads KUBECONFIG once, at import; read it now. In a pod: the service account.
    return TrainingClient(config_file=os.environ.get("KUBECONFIG") or None, namespace=namespace)


def _conflict(err: Exception) -> bool:
    cause = err.__cause__
    return getattr(cause, "status", None) == 409


class PyTorchJobHandle:
    def __init__(self, client, name: str, namespace: str, poll_s: float = 10.0, timeout_s: int = 7 * 24 * 3600):
        self.client, self.name, self.namespace = client, name, namespace
        self.poll_s, self.timeout_s = poll_s, timeout_s

    def _conditions(self) -> set[str]:
        job = self.client.get_job(name=self.name, namespace=self.namespace)
        conditions = (job.status.conditions or []) if job.status else []
        return {c.type for c in conditions if c.status == "True"}

    def wait(self) -> None:
        """Stream the master's log while it runs (again after each restart), then wait for the final condition."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            states = self._conditions()
            if states & {"Succeeded", "Failed"}:
                break
            if "Running" in states:
                try:
                    self.client.get_job_logs(name=self.name, namespace=self.namespace, is_master=True, follow=True)
                except RuntimeError as err:  # a pod that restarts mid-stream; the next poll picks it up again
                    log.info("log stream of %s ended: %s", self.name, err)
            time.sleep(self.poll_s)
        try:
            self.client.wait_for_job_conditions(
                name=self.name,
                namespace=self.namespace,
                expected_conditions={"Succeeded"},
                wait_timeout=max(int(deadline - time.monotonic()), int(self.poll_s)),
                polling_interval=max(int(self.poll_s), 1),
            )
        except (RuntimeError, TimeoutError) as err:
            raise LaunchError(
                f"PyTorchJob {self.namespace}/{self.name} did not succeed: {self._last_condition() or err}. "
                "Its master's log is above; pod events: "
                f"kubectl -n {self.namespace} get events --field-selector involvedObject.name={self.name}-master-0"
            ) from None

    def _last_condition(self) -> str:
        try:
            job = self.client.get_job(name=self.name, namespace=self.namespace)
        except RuntimeError:
            return ""
        conditions = [c for c in ((job.status.conditions or []) if job.status else []) if c.status == "True"]
        if not conditions:
            return ""
        last = conditions[-1]
        return " ".join(x for x in (last.type, last.reason, last.message) if x)

    def delete(self) -> None:
        try:
            self.client.delete_job(name=self.name, namespace=self.namespace)
        except RuntimeError as err:
            if getattr(err.__cause__, "status", None) != 404:
                log.warning("could not delete PyTorchJob %s/%s: %s", self.namespace, self.name, err)


class PyTorchJobLauncher:
    def __init__(self, client=None):
        self._client = client

    def submit(self, spec: TrainSpec) -> PyTorchJobHandle:
        job = build_pytorchjob(spec.launched())
        errors = admission_errors(to_dict(job))
        if errors:
            raise LaunchError("the PyTorchJob would be rejected:\n  " + "\n  ".join(errors))
        client = self._client or _client(spec.namespace)
        handle = PyTorchJobHandle(client, spec.job_name, spec.namespace, poll_s=spec.poll_seconds)
        if spec.active_deadline_seconds:
            handle.timeout_s = spec.active_deadline_seconds + 600
        try:
            client.create_job(job=job, namespace=spec.namespace)
        except RuntimeError as err:
            if not _conflict(err):
                raise LaunchError(
                    f"could not create PyTorchJob {spec.namespace}/{spec.job_name}: {err}. Check that the training "
                    "operator is installed and the run's service account may create pytorchjobs (medrl doctor)"
                ) from None
            # A retried pipeline task: the job of this run and arm exists. Finished badly: start it again.
            if "Failed" in handle._conditions():
                log.info("PyTorchJob %s failed before; starting it again", spec.job_name)
                handle.delete()
                _wait_gone(client, spec)
                client.create_job(job=job, namespace=spec.namespace)
            else:
                log.info("PyTorchJob %s exists; following it", spec.job_name)
        log.info("PyTorchJob %s/%s: %d node(s) x %d process(es)", spec.namespace, spec.job_name, spec.nodes,
                 spec.nproc_per_node)  # fmt: skip
        return handle


def _wait_gone(client, spec: TrainSpec, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.get_job(name=spec.job_name, namespace=spec.namespace)
        except RuntimeError:
            return
        time.sleep(min(spec.poll_seconds, 5))
    raise LaunchError(f"PyTorchJob {spec.namespace}/{spec.job_name} was not deleted within {timeout_s:.0f} s")


def delete_jobs_of_run(pipeline_run: str, namespace: str, client=None) -> list[str]:
    """Delete every PyTorchJob labelled with this pipeline run (the pipeline's exit handler)."""
    client = client or _client(namespace)
    selector = f"{PIPELINE_RUN_LABEL}={label_value(pipeline_run)}"
    names = []
    for job in client.list_jobs(namespace=namespace):
        labels = job.metadata.labels or {}
        if labels.get(PIPELINE_RUN_LABEL) == label_value(pipeline_run):
            client.delete_job(name=job.metadata.name, namespace=namespace)
            names.append(job.metadata.name)
    log.info("deleted %d PyTorchJob(s) matching %s", len(names), selector)
    return names


def to_yaml(job) -> str:
    """The job as YAML that yamllint accepts (sequences indented under their key)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow=False, indentless=False):
            return super().increase_indent(flow, False)

    return yaml.dump(to_dict(job), Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)
