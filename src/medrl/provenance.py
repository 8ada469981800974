"""What produced a run: medrl's version and revision, the container images, Python and the ML libraries, the
GPUs, the resolved config and its seeds, and a fingerprint of each data split. Written to `<run>/provenance.json`
once the data is prepared; `medrl run --like` reads it back to repeat a run and name what differs."""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

LIBRARIES = ("torch", "transformers", "trl", "peft", "deepspeed", "vllm", "accelerate", "flash-attn", "kfp")
IMAGE_ENV = "MEDRL_IMAGE"  # set by the pipeline/launcher to the image reference, ideally name@sha256:digest
FILE = "provenance.json"


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def git_revision(where: Path | None = None) -> dict[str, Any] | None:
    """The commit of the checkout medrl runs from (and whether it has uncommitted changes); None when installed
    from a wheel or git is missing."""
    where = where or Path(__file__).resolve().parent
    git = shutil.which("git")
    if not git:
        return None
    try:
        rev = subprocess.run([git, "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def images() -> dict[str, Any] | None:
    """The container images this step runs in, where it runs in a cluster: the pod's own container statuses
    (image and imageID, which holds the digest) read from the Kubernetes API, else MEDRL_IMAGE."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return {"image": os.environ[IMAGE_ENV]} if os.environ.get(IMAGE_ENV) else None
    found: dict[str, Any] = {"image": os.environ.get(IMAGE_ENV)}
    try:
        from kubernetes import client, config

        config.load_incluster_config()
        namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip()
        pod = client.CoreV1Api().read_namespaced_pod(os.environ.get("HOSTNAME", ""), namespace)
        found["containers"] = {
            s.name: {"image": s.image, "digest": s.image_id} for s in pod.status.container_statuses or []
        }
    except Exception as err:  # no RBAC to read pods, or not a pod at all: say so rather than fail the step
        found["unavailable"] = type(err).__name__
    return found


def hardware() -> dict[str, Any]:
    """CUDA, driver and GPU model and count where torch sees GPUs; the CPU count always."""
    found: dict[str, Any] = {"cpus": os.cpu_count(), "machine": platform.machine()}
    try:
        import torch

        found["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            found["gpus"] = {"count": len(names), "models": sorted(set(names))}
    except Exception:
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=20)  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                found["driver"] = out.stdout.split()[0]
        except (OSError, subprocess.TimeoutExpired):
            pass
    return found


def environment() -> dict[str, Any]:
    """Versions and hardware of this process: what a repeat compares (see `differences`)."""
    import medrl

    return {
        "medrl": {"version": medrl.__version__, "git": git_revision()},
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "images": images(),
        "hardware": hardware(),
    }


def split_fingerprint(dataset: Path, split: str) -> dict[str, Any]:
    """sha256 over a prepared split's rows (as written) and the sha256 of every image each row names, in order:
    equal fingerprints mean the same questions on the same pixels."""
    digest = hashlib.sha256()
    rows = 0
    seen: dict[str, str] = {}
    with (dataset / f"{split}.jsonl").open("rb") as f:
        for line in f:
            if not line.strip():
                continue
            rows += 1
            digest.update(line)
            image = json.loads(line).get("image")
            for rel in [image] if isinstance(image, str) else image or []:
                if rel not in seen:
                    seen[rel] = hashlib.sha256((dataset / rel).read_bytes()).hexdigest()
                digest.update(seen[rel].encode())
    return {"rows": rows, "images": len(seen), "sha256": digest.hexdigest()}


def record(config_text: str, seeds: dict[str, Any], dataset: Path) -> dict[str, Any]:
    """The provenance document of a run whose prepared data is at `dataset`."""
    return {
        "format": 1,
        **environment(),
        "config": config_text,
        "seeds": seeds,
        "splits": {split: split_fingerprint(dataset, split) for split in ("train", "test")},
    }


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per version, image, hardware or data fingerprint that differs between two provenance documents
    (or environments), naming it.

    >>> a = {"python": "3.11.7", "libraries": {"trl": "1.16.0", "vllm": None}}
    >>> differences(a, {"python": "3.11.7", "libraries": {"trl": "1.17.0", "vllm": "0.30.0"}})
    ['trl: 1.16.0 then, 1.17.0 now', 'vllm: absent then, 0.30.0 now']
    """
    lines = []

    def say(name: str, then: Any, now: Any) -> None:
        if then != now:
            lines.append(f"{name}: {_shown(then)} then, {_shown(now)} now")

    say("medrl", (old.get("medrl") or {}).get("version"), (new.get("medrl") or {}).get("version"))
    old_git, new_git = (old.get("medrl") or {}).get("git") or {}, (new.get("medrl") or {}).get("git") or {}
    say("medrl commit", old_git.get("commit"), new_git.get("commit"))
    say("python", old.get("python"), new.get("python"))
    for name in sorted(set(old.get("libraries") or {}) | set(new.get("libraries") or {})):
        say(name, (old.get("libraries") or {}).get(name), (new.get("libraries") or {}).get(name))
    if old.get("images") and new.get("images"):
        say("container images", old["images"], new["images"])
    old_hw, new_hw = old.get("hardware") or {}, new.get("hardware") or {}
    for key in ("cuda", "driver", "gpus"):
        say(key, old_hw.get(key), new_hw.get(key))
    if "splits" in old and "splits" in new:
        for split in sorted(set(old["splits"]) | set(new["splits"])):
            then, now = (old["splits"].get(split) or {}), (new["splits"].get(split) or {})
            if then.get("sha256") != now.get("sha256"):
                was = f"{then.get('rows', '?')} rows {str(then.get('sha256'))[:12]}"
                is_ = f"{now.get('rows', '?')} rows {str(now.get('sha256'))[:12]}"
                lines.append(f"data fingerprint of the {split} split: {was} then, {is_} now")
    return lines


def _shown(value: Any) -> str:
    if value is None:
        return "absent"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
