"""What every launcher shares: the training job's spec (the pipeline's cluster parameters), its labels, the
launcher and handle interfaces, and LaunchError."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from medrl.errors import MedrlError

log = logging.getLogger("medrl")

TRAINING_LABELS = {"app.kubernetes.io/name": "medrl", "app.kubernetes.io/component": "training"}
ARM_LABEL = "medrl.io/arm"
PIPELINE_RUN_LABEL = "medrl.io/pipeline-run"
METRICS_PORT = 9400  # the PodMonitor in k8s/base scrapes the container port named `metrics`
# The judge's API key, for a judge server that asks for one (k8s/base/judge-key-secret.template.yaml): the optional
# Secret's key as the variable the openai judge reads by default (config: judge.api_key_env).
JUDGE_KEY_SECRET = "medrl-judge-key"
JUDGE_KEY = {"api-key": "MEDRL_JUDGE_API_KEY"}


class LaunchError(MedrlError, RuntimeError):
    """Training could not be started or did not finish; the message names the job and what to check."""


@dataclass
class TrainSpec:
    """What to train and, for cluster backends, on which resources. Field names are the pipeline's parameters."""

    run_uri: str
    arm: str
    pipeline_run: str = ""  # the Kubeflow run id: labels the job so the pipeline's exit handler can delete it
    image: str = "ghcr.io/medrl/medrl:0.1.0"
    namespace: str = "medrl"
    nodes: int = 1
    gpus_per_node: int = 0  # 0: one CPU process per node
    cpu: str = "8"
    memory: str = "64Gi"
    shm_size: str = "16Gi"
    scratch_size: str = "200Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    store_secret: str = "medrl-store"  # keys `accesskey`, `secretkey` (the layout of KFP's mlpipeline-minio-artifact)
    store_config: str = "medrl-store"  # ConfigMap of non-secret store settings, taken as environment
    service_account: str = "medrl-train"
    ttl_seconds_after_finished: int = 3600
    # The operator's own count; under restartPolicy ExitCode training-operator 1.9 recreates a failed pod and never
    # reaches it. The budget that ends a crash loop is medrl's (attempts_without_progress).
    backoff_limit: int = 3
    # Failed attempts in a row without a newer committed checkpoint before train-arm exits 1 (MEDRL_ATTEMPTS_WITHOUT_
    # PROGRESS in the pods; medrl.cluster.entrypoint). Each new job starts a new count.
    attempts_without_progress: int = 3
    launch_id: str = ""  # set by each submit: the attempts of one job share it (MEDRL_LAUNCH_ID)
    active_deadline_seconds: int = 0  # 0: no deadline
    metrics_port: int = METRICS_PORT
    poll_seconds: float = 10.0  # how often the launcher asks the API server about the job
    training_runtime: str = "torch-distributed"  # TrainJob: the (Cluster)TrainingRuntime it references

    def __post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"nodes={self.nodes}: a training job needs at least one node")
        if self.gpus_per_node < 0:
            raise ValueError(f"gpus_per_node={self.gpus_per_node}: give 0 (CPU) or more")
        if self.attempts_without_progress < 1:
            raise ValueError(f"attempts_without_progress={self.attempts_without_progress}: give 1 or more")
        if self.active_deadline_seconds < 0:
            raise ValueError(f"active_deadline_seconds={self.active_deadline_seconds}: give 0 (no deadline) or more")
        if not self.image:
            raise ValueError("image is empty: give the medrl image the training pods run (pipeline parameter image)")

    @classmethod
    def from_params(cls, run_uri: str, arm: str, params: dict[str, Any] | None) -> TrainSpec:
        known = {f.name for f in fields(cls)} - {"run_uri", "arm"}
        params = dict(params or {})
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"cluster settings {', '.join(unknown)} are not known; use {', '.join(sorted(known))}")
        return cls(run_uri=run_uri, arm=arm, **{k: v for k, v in params.items() if v is not None})

    def restart_env(self) -> dict[str, str]:
        """What the pods' entrypoint needs for its restart budget."""
        env = {"MEDRL_ATTEMPTS_WITHOUT_PROGRESS": str(self.attempts_without_progress)}
        if self.launch_id:
            env["MEDRL_LAUNCH_ID"] = self.launch_id
        return env

    def launched(self) -> TrainSpec:
        """This spec with a new launch id: a new job, a new count of attempts."""
        return replace(self, launch_id=secrets.token_hex(4))

    @property
    def nproc_per_node(self) -> int:
        return self.gpus_per_node or 1

    @property
    def job_name(self) -> str:
        """Stable for one run and arm, so a retried pipeline task finds the job it started; a DNS-1035 label short
        enough for the operator's `<job>-worker-<i>` pod and service names."""
        digest = hashlib.sha256(f"{self.run_uri}\n{self.arm}".encode()).hexdigest()[:8]
        arm = re.sub(r"[^a-z0-9-]", "-", self.arm.lower()).strip("-")[:30].strip("-") or "arm"
        return f"medrl-{arm}-{digest}"


class Handle(Protocol):
    name: str

    def wait(self) -> None:
        """Block until training ends; raise LaunchError when it failed."""

    def delete(self) -> None:
        """Remove what `submit` created (nothing for in-process training)."""


class Launcher(Protocol):
    def submit(self, spec: TrainSpec) -> Handle: ...
