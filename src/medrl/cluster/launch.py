"""Where one arm trains: in this process, as a Kubeflow PyTorchJob (Training Operator v1) or as a TrainJob (Kubeflow
Trainer v2).

Each backend is a launcher with one method, `submit(spec) -> handle`; the handle waits for the training to end
and deletes what was created. A new backend is one more module beside pytorchjob.py and one more entry in LAUNCHERS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from medrl import store, study
from medrl.cluster import pytorchjob, trainjob
from medrl.cluster.pytorchjob import PyTorchJobLauncher
from medrl.cluster.spec import Launcher, LaunchError, TrainSpec
from medrl.cluster.trainjob import TrainJobLauncher


@dataclass
class InProcessHandle:
    name: str

    def wait(self) -> None:
        return None

    def delete(self) -> None:
        return None


class InProcessLauncher:
    """Trains in the calling process (laptops, CI, the kfp.local pipeline)."""

    def submit(self, spec: TrainSpec) -> InProcessHandle:
        # lazy: torch and TRL load only where the arm trains here; submitting a job to the cluster needs neither
        from medrl.study.arm import train_in_run

        train_in_run(spec.run_uri, spec.arm)
        return InProcessHandle(name=f"in-process {spec.arm}")


LAUNCHERS: dict[str, type[Launcher]] = {
    "inprocess": InProcessLauncher,
    "pytorchjob": PyTorchJobLauncher,
    "trainjob": TrainJobLauncher,
}


def in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def resolve(kind: str) -> str:
    """`auto` inside a Kubernetes pod is a TrainJob where Kubeflow Trainer v2 is installed, else a PyTorchJob;
    anywhere else it is in-process training."""
    kind = (kind or "auto").strip().lower()
    if kind == "auto":
        if not in_cluster():
            return "inprocess"
        return "trainjob" if trainjob.crd_installed() else "pytorchjob"
    if kind not in LAUNCHERS:
        raise ValueError(f"launcher={kind!r}: choose auto, {', '.join(LAUNCHERS)}")
    return kind


def launch_arm(run_uri: str, arm: str, launcher: str = "auto", params: dict[str, Any] | None = None) -> str:
    """Train one arm with the chosen backend and wait for it; returns the URI of the model the arm evaluates.

    Arms that train nothing, or whose model is already committed (a retried task), return at once."""
    run, cfg = study.load_run(run_uri)
    if arm not in cfg.arms:
        raise ValueError(f"arm {arm!r} is not in run {run_uri}; it has {', '.join(cfg.arms)}")
    if cfg.arms[arm].method == "none" or store.is_committed(run.arm(arm).model):
        return study.model_of(run, cfg, arm)
    spec = TrainSpec.from_params(run_uri, arm, params)
    backend = LAUNCHERS[resolve(launcher)]()
    handle = backend.submit(spec)
    try:
        handle.wait()
    finally:
        handle.delete()
    if not store.is_committed(run.arm(arm).model):
        raise LaunchError(f"{handle.name} finished but {run.arm(arm).model} is not committed; read the job's log")
    return run.arm(arm).model


def cleanup(pipeline_run: str, namespace: str, launcher: str = "auto") -> list[str]:
    """Delete the training jobs a pipeline run left behind (the run failed or was stopped); returns their names."""
    kind = resolve(launcher) if pipeline_run else "inprocess"
    if kind == "inprocess":
        return []
    backend = trainjob if kind == "trainjob" else pytorchjob
    return backend.delete_jobs_of_run(pipeline_run, namespace)
