"""The pod restrictions every medrl pod meets (Pod Security `restricted` plus ours), as a checker tests share."""

from __future__ import annotations

from typing import Any

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


def pod_specs(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every pod a manifest creates, PyTorchJob replicas included."""
    kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
    if kind == "Pod":
        return [(f"Pod/{name}", doc["spec"])]
    if kind in WORKLOAD_KINDS:
        return [(f"{kind}/{name}", doc["spec"]["template"]["spec"])]
    if kind == "CronJob":
        return [(f"CronJob/{name}", doc["spec"]["jobTemplate"]["spec"]["template"]["spec"])]
    if kind == "PyTorchJob":
        replicas = doc["spec"]["pytorchReplicaSpecs"]
        return [(f"PyTorchJob/{name}[{r}]", s["template"]["spec"]) for r, s in replicas.items()]
    return []


def violations(where: str, pod: dict[str, Any]) -> list[str]:
    """Non-root, read-only root filesystem, no privilege escalation, all capabilities dropped, RuntimeDefault
    seccomp, requests and limits of cpu and memory, no host namespaces or host paths."""
    out = []
    psc = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            out.append(f"{where}: {flag}")
    for vol in pod.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"{where}: hostPath volume {vol['name']}")
    if psc.get("runAsUser") == 0:
        out.append(f"{where}: runAsUser 0")
    for c in (pod.get("initContainers") or []) + (pod.get("containers") or []):
        at = f"{where} container {c['name']}"
        sc = c.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{at}: runAsNonRoot not true")
        if (sc.get("runAsUser", psc.get("runAsUser"))) == 0:
            out.append(f"{at}: runs as root")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{at}: readOnlyRootFilesystem not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{at}: allowPrivilegeEscalation not false")
        if sc.get("privileged"):
            out.append(f"{at}: privileged")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []) or caps.get("add"):
            out.append(f"{at}: capabilities must drop ALL and add none")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            out.append(f"{at}: seccompProfile {seccomp}, want RuntimeDefault")
        res = c.get("resources") or {}
        for part in ("requests", "limits"):
            for key in ("cpu", "memory"):
                if key not in (res.get(part) or {}):
                    out.append(f"{at}: no {part}.{key}")
    return out
