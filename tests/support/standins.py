"""Stand-ins for servers that cannot run here: the Kubernetes API server (with the training operator, Kubeflow
Trainer v2 and a kubelet behind it) and the Kubeflow Pipelines API. Both are STUBS, named as such in every test that
uses them: real HTTP on loopback, driven by the real clients (kubernetes, kubeflow-training, kfp), recording every
request.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

TRAINER = "trainer.kubeflow.org/v1alpha1"


class _Server:
    def __init__(self, handler_cls):
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.httpd.daemon_threads = True
        self.httpd.state = self  # type: ignore[attr-defined]
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, paid by every test that uses a stand-in
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    @property
    def state(self):
        return self.server.state  # type: ignore[attr-defined]

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}") if length else {}

    def _json(self, code: int, doc) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self, method: str) -> None:
        url = urlparse(self.path)
        body = self._body() if method in ("POST", "PUT", "PATCH") else None
        self.state.requests.append({"method": method, "path": url.path, "query": parse_qs(url.query), "body": body})
        self.route(method, url.path, parse_qs(url.query), body)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")


# ------------------------------------------------------------------------------------------ Kubeflow Pipelines


class KfpHandler(_Handler):
    def route(self, method, path, query, body):
        s = self.state
        if path == "/apis/v2beta1/healthz":
            return self._json(200, {"multi_user": False})
        if path == "/apis/v2beta1/experiments" and method == "GET":
            flt = json.loads(query.get("filter", ["{}"])[0] or "{}")
            wanted = [p.get("string_value") or p.get("stringValue") for p in flt.get("predicates", [])]
            found = [e for e in s.experiments if not wanted or e["display_name"] in wanted]
            return self._json(200, {"experiments": found, "total_size": len(found)})
        if path == "/apis/v2beta1/experiments" and method == "POST":
            exp = {"experiment_id": str(uuid.uuid4()), "display_name": body["display_name"]}
            s.experiments.append(exp)
            return self._json(200, exp)
        if path == "/apis/v2beta1/runs" and method == "POST":
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": "2026-11-22T01:00:00Z"}
            s.runs.append(run)
            return self._json(200, run)
        if path == "/apis/v2beta1/runs" and method == "GET":
            if s.multi_user and "experiment_id" not in query and not query.get("namespace", [""])[0]:
                # Multi-user Kubeflow authorises a listing by its namespace; none given, the empty one is refused.
                return self._json(403, {"error": "Failed to list runs due to authorization error. Check if you have "
                                        "permission to access namespace "})  # fmt: skip
            runs = s.runs
            if "experiment_id" in query:
                runs = [r for r in runs if r.get("experiment_id") == query["experiment_id"][0]]
            return self._json(200, {"runs": runs[::-1], "total_size": len(runs)})
        if path == "/apis/v2beta1/recurringruns" and method == "POST":
            job = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED"}
            s.recurring.append(job)
            return self._json(200, job)
        return self._json(404, {"error": f"stand-in has no route {method} {path}"})


class KfpStandIn(_Server):
    """STUB of the Kubeflow Pipelines v2beta1 API: experiments, runs and recurring runs, kept in memory."""

    def __init__(self):
        super().__init__(KfpHandler)
        self.experiments: list[dict] = []
        self.runs: list[dict] = []
        self.recurring: list[dict] = []
        self.multi_user = False  # True: listing runs needs an experiment or a namespace, as in multi-user Kubeflow


# ------------------------------------------------------------------------------------------ Kubernetes


class KubeHandler(_Handler):
    def route(self, method, path, query, body):
        s = self.state
        if path.rstrip("/") == "/version":
            return self._json(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-standin", "gitCommit": "0",
                                    "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go",
                                    "compiler": "gc", "platform": "linux/amd64"})  # fmt: skip
        if path == "/apis/kubeflow.org/v1":
            if not s.crd:
                return self._json(404, _status(404, "the server could not find the requested resource"))
            return self._json(200, {"kind": "APIResourceList", "groupVersion": "kubeflow.org/v1",
                                    "resources": [{"name": "pytorchjobs", "kind": "PyTorchJob", "namespaced": True,
                                                   "verbs": ["create", "get", "list", "delete"]}]})  # fmt: skip
        if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews":
            attrs = body["spec"]["resourceAttributes"]
            what = attrs["resource"] + ("/" + attrs["subresource"] if attrs.get("subresource") else "")
            allowed = (body["spec"]["user"], attrs["namespace"], what, attrs["verb"]) in s.allowed
            return self._json(201, {**body, "status": {"allowed": allowed}})
        if path == "/api/v1/nodes":
            return self._json(200, {"kind": "NodeList", "items": s.nodes})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if m:
            ns = s.namespaces.get(m.group(1))
            if ns is None:
                return self._json(404, _status(404, f'namespaces "{m.group(1)}" not found'))
            return self._json(200, {"kind": "Namespace", "metadata": {"name": m.group(1), "labels": ns}})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(secrets|configmaps)/([^/]+)", path)
        if m:
            doc = s.objects.get((m.group(2), m.group(1), m.group(3)))
            if doc is None:
                return self._json(404, _status(404, f"{m.group(2)} {m.group(3)} not found"))
            return self._json(200, {"metadata": {"name": m.group(3), "namespace": m.group(1)}, "data": doc})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?", path)
        if m:
            code = 200 if m.group(2) in s.healthy_services else 503
            return self._json(code, {"proxied": m.group(2), "path": m.group(3)})
        m = re.fullmatch(r"/apis/kubeflow.org/v1/namespaces/([^/]+)/pytorchjobs(?:/([^/]+))?", path)
        if m:
            return self._pytorchjobs(method, m.group(1), m.group(2), body)
        if path.startswith(f"/apis/{TRAINER}"):
            return self._trainer(method, path[len(f"/apis/{TRAINER}") :], query, body)
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/events", path)
        if m:
            items = [e for e in s.events if e["metadata"]["namespace"] == m.group(1)]
            return self._json(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)
        if m:
            return self._pods(m.group(1), query)
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)
        if m:
            return self._log(m.group(2), query)
        return self._json(404, _status(404, f"stand-in has no route {method} {path}"))

    def _pytorchjobs(self, method, ns, name, body):
        s = self.state
        if method == "POST":
            job_name = body["metadata"]["name"]
            if (ns, job_name) in s.jobs:
                return self._json(
                    409, _status(409, f'pytorchjobs.kubeflow.org "{job_name}" already exists', "AlreadyExists")
                )
            s.create_job(ns, body)
            return self._json(201, body)
        if name is None:
            return self._json(
                200, {"kind": "PyTorchJobList", "items": [j.doc() for (n, _), j in s.jobs.items() if n == ns]}
            )
        return self._one_job(method, s.jobs, ns, name, "pytorchjobs.kubeflow.org")

    def _trainer(self, method, path, query, body):
        """Kubeflow Trainer v2: discovery, runtimes, TrainJobs; creating one runs its webhook's runtime check."""
        s = self.state
        if not s.trainer_crd:
            return self._json(404, _status(404, "the server could not find the requested resource"))
        if path == "":
            return self._json(200, {"kind": "APIResourceList", "groupVersion": TRAINER, "resources": [
                {"name": r, "kind": k, "namespaced": n, "verbs": ["create", "get", "list", "watch", "delete"]}
                for r, k, n in (("trainjobs", "TrainJob", True), ("trainingruntimes", "TrainingRuntime", True),
                                ("clustertrainingruntimes", "ClusterTrainingRuntime", False))]})  # fmt: skip
        m = re.fullmatch(r"/clustertrainingruntimes/([^/]+)", path)
        if m:
            if s.cluster_runtimes_forbidden:
                return self._json(403, _status(403, "clustertrainingruntimes is forbidden", "Forbidden"))
            doc = s.runtimes.get(("ClusterTrainingRuntime", "", m.group(1)))
            return self._json(200, doc) if doc else self._json(404, _status(404, f"{m.group(1)} not found"))
        m = re.fullmatch(r"/namespaces/([^/]+)/trainingruntimes/([^/]+)", path)
        if m:
            doc = s.runtimes.get(("TrainingRuntime", m.group(1), m.group(2)))
            return self._json(200, doc) if doc else self._json(404, _status(404, f"{m.group(2)} not found"))
        m = re.fullmatch(r"/namespaces/([^/]+)/trainjobs(?:/([^/]+))?", path)
        if not m:
            return self._json(404, _status(404, f"stand-in has no route {method} {path}"))
        ns, name = m.group(1), m.group(2)
        if ns in s.forbidden_namespaces:
            return self._json(403, _status(403, f"trainjobs is forbidden in namespace {ns}", "Forbidden"))
        if method == "POST":
            job_name = body["metadata"]["name"]
            if (ns, job_name) in s.trainjobs:
                return self._json(409, _status(409, f'trainjobs "{job_name}" already exists', "AlreadyExists"))
            ref = body["spec"]["runtimeRef"]
            key = (ref.get("kind", "ClusterTrainingRuntime"), ns if ref.get("kind") == "TrainingRuntime" else "",
                   ref["name"])  # fmt: skip
            if key not in s.runtimes:  # Trainer's validating webhook
                return self._json(422, _status(422, f"spec.runtimeRef: {ref['name']} not found", "Invalid"))
            s.create_trainjob(ns, body)
            return self._json(201, body)
        if name is None:
            selector = dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",") if p)
            items = [j.doc() for (n, _), j in s.trainjobs.items() if n == ns
                     and selector.items() <= (j.body["metadata"].get("labels") or {}).items()]  # fmt: skip
            return self._json(200, {"kind": "TrainJobList", "apiVersion": TRAINER, "metadata": {}, "items": items})
        return self._one_job(method, s.trainjobs, ns, name, "trainjobs.trainer.kubeflow.org")

    def _one_job(self, method, jobs, ns, name, resource):
        """GET or DELETE of one PyTorchJob or TrainJob (`jobs`: the state's table of that kind)."""
        job = jobs.get((ns, name))
        if job is None:
            return self._json(404, _status(404, f'{resource} "{name}" not found'))
        if method == "DELETE":
            job.kill()
            del jobs[(ns, name)]
            self.state.deleted.append(name)
            return self._json(200, _status(200, "deleted", "Success"))
        return self._json(200, job.doc())

    def _pods(self, ns, query):
        selector = dict(p.split("=", 1) for p in query.get("labelSelector", [""])[0].split(",") if p)
        if "jobset.sigs.k8s.io/jobset-name" in selector:
            job = self.state.trainjobs.get((ns, selector["jobset.sigs.k8s.io/jobset-name"]))
        else:
            job = self.state.jobs.get((ns, selector.get("training.kubeflow.org/job-name")))
        pods = [job.master_pod()] if job and job.started else []
        items = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
        return self._json(200, {"kind": "PodList", "items": items})

    def _log(self, pod, query):
        jobs = [*self.state.jobs.values(), *self.state.trainjobs.values()]
        job = next((j for j in jobs if j.pod_name == pod), None)
        if job is None:
            return self._json(404, _status(404, f'pods "{pod}" not found'))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()  # no length: the stream ends when the connection closes (HTTP/1.0)
        sent = 0
        while True:
            lines = job.log_lines[sent:]
            for line in lines:
                self.wfile.write((line + "\n").encode())
            sent += len(lines)
            self.wfile.flush()
            follow = query.get("follow", ["false"])[0].lower() == "true"  # the client sends "True"
            if (job.finished or not follow) and sent == len(job.log_lines):
                return
            time.sleep(0.05)


def _status(code: int, message: str, reason: str = "NotFound") -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip


class _Job:
    """A PyTorchJob as the operator and kubelet would run it here: the Master's `pytorch` container command runs as
    a local process with the operator's environment; conditions follow the process."""

    def __init__(self, standin: KubeStandIn, ns: str, body: dict):
        self.body, self.ns, self.standin = body, ns, standin
        self.name = body["metadata"]["name"]
        self.pod_name = f"{self.name}-master-0"
        self.conditions = [{"type": "Created", "status": "True", "reason": "PyTorchJobCreated"}]
        self.log_lines: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.started = self.finished = False
        self.exit_code: int | None = None

    def doc(self) -> dict:
        return {**self.body, "status": {"conditions": self.conditions}}

    def master_pod(self) -> dict:
        phase = "Running" if not self.finished else ("Succeeded" if self.exit_code == 0 else "Failed")
        labels = {"training.kubeflow.org/job-name": self.name, "training.kubeflow.org/job-role": "master"}
        meta = {"name": self.pod_name, "namespace": self.ns, "labels": labels}
        return {"kind": "Pod", "metadata": meta, "status": {"phase": phase}}

    def start(self) -> None:
        spec = self.body["spec"]
        replicas = spec["pytorchReplicaSpecs"]
        container = next(c for c in replicas["Master"]["template"]["spec"]["containers"] if c["name"] == "pytorch")
        nnodes = sum(r.get("replicas", 1) for r in replicas.values())
        nproc = spec.get("nprocPerNode", "1")
        env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", []) if "value" in e}}
        env |= {"PET_NNODES": str(nnodes), "PET_NPROC_PER_NODE": nproc, "PET_NODE_RANK": "0", "RANK": "0",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": str(nnodes * int(nproc))}  # fmt: skip
        self.conditions.append({"type": "Running", "status": "True", "reason": "PyTorchJobRunning"})
        self._run(list(container["command"]), env)

    def _run(self, command: list[str], env: dict[str, str]) -> None:
        """The container's command as a local process (a failure on purpose when the stand-in says so), in the
        pod's writable /tmp; its output becomes the pod's log, its end the job's conditions (`_ended`)."""
        env["HOME"] = env["TMPDIR"] = str(self.standin.scratch)
        if self.standin.exit_code is not None:
            command = [sys.executable, "-c",
                       f"print('training failed on purpose'); raise SystemExit({self.standin.exit_code})"]  # fmt: skip
        elif command[0] == "medrl":
            command = [sys.executable, "-m", "medrl", *command[1:]]
        self.standin.commands.append((command, {k: env[k] for k in env if k.startswith(("PET_", "MEDRL_"))}))
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.started = True
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc and self.proc.stdout
        for line in self.proc.stdout:
            self.log_lines.append(line.rstrip("\n"))
        self.exit_code = self.proc.wait()
        self._ended()
        self.finished = True

    def _ended(self) -> None:
        for c in self.conditions:
            c["status"] = "False"
        kind = "Succeeded" if self.exit_code == 0 else "Failed"
        self.conditions.append({"type": kind, "status": "True", "reason": f"PyTorchJob{kind}"})

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _TrainJob(_Job):
    """A TrainJob as Kubeflow Trainer v2 (torch plugin), JobSet and a kubelet would run it here: rank 0's `node`
    container runs `spec.trainer.command` as a local process with the trainer's env and the torch plugin's PET_*;
    its end sets the TrainJob's Complete or Failed condition and, on failure, the pod's events."""

    def __init__(self, standin: KubeStandIn, ns: str, body: dict):
        super().__init__(standin, ns, body)
        self.pod_name = f"{self.name}-node-0-0-x7k2p"
        self.conditions = []
        self.uid = str(uuid.uuid4())

    def master_pod(self) -> dict:
        pod = super().master_pod()
        pod["metadata"]["labels"] = {"jobset.sigs.k8s.io/jobset-name": self.name,
                                     "jobset.sigs.k8s.io/replicatedjob-name": "node",
                                     "batch.kubernetes.io/job-completion-index": "0"}  # fmt: skip
        pod["metadata"] |= {"uid": self.uid, "creationTimestamp": "2026-11-22T01:00:00Z"}
        return pod

    def _env(self) -> dict[str, str]:
        trainer = self.body["spec"]["trainer"]
        env = {}
        for e in trainer.get("env", []):
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef") or (e.get("valueFrom") or {}).get("secretKeyRef")
            if "value" in e:
                env[e["name"]] = e["value"]
            elif ref:
                kind = "configmaps" if "configMapKeyRef" in e["valueFrom"] else "secrets"
                found = (self.standin.objects.get((kind, self.ns, ref["name"])) or {}).get(ref["key"])
                if found is not None:
                    env[e["name"]] = found
        nnodes = trainer.get("numNodes", 1)
        return env | {"PET_NNODES": str(nnodes), "PET_NPROC_PER_NODE": str(trainer.get("numProcPerNode", "auto")),
                      "PET_NODE_RANK": "0", "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": "29400"}  # fmt: skip

    def start(self) -> None:
        self._run(list(self.body["spec"]["trainer"]["command"]), {**os.environ, **self._env()})

    def _ended(self) -> None:
        if self.exit_code == 0:
            self.conditions.append({"type": "Complete", "status": "True", "reason": "JobsCompleted",
                                    "message": "jobset completed successfully"})  # fmt: skip
        else:
            self.standin.events.append({
                "metadata": {"name": f"{self.pod_name}.1", "namespace": self.ns},
                "involvedObject": {"kind": "Pod", "name": self.pod_name, "namespace": self.ns},
                "reason": "BackOff", "type": "Warning", "message": f"container node exited with {self.exit_code}",
                "firstTimestamp": "2026-11-22T01:00:05Z", "lastTimestamp": "2026-11-22T01:00:05Z",
            })  # fmt: skip
            self.conditions.append({"type": "Failed", "status": "True", "reason": "FailedJobs",
                                    "message": "jobset failed due to one or more job failures"})  # fmt: skip


class KubeStandIn(_Server):
    """STUB of the Kubernetes API server with the training operator and a kubelet behind it (see _Job), plus the
    read-only endpoints `medrl doctor` asks: discovery, namespaces, Secrets, ConfigMaps, nodes, service proxy,
    SubjectAccessReview. State is plain attributes a test sets."""

    def __init__(self, scratch: Path):
        super().__init__(KubeHandler)
        self.scratch = scratch
        self.crd = True
        self.allowed: set[tuple[str, str, str, str]] = set()
        self.namespaces: dict[str, dict[str, str]] = {}
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.nodes: list[dict] = []
        self.healthy_services: set[str] = set()
        self.jobs: dict[tuple[str, str], _Job] = {}
        self.deleted: list[str] = []
        self.commands: list[tuple[list[str], dict]] = []
        self.exit_code: int | None = None  # set: the training container exits with it instead of training
        self.start_jobs = True
        # Kubeflow Trainer v2: served or not, runtimes by (kind, namespace or "", name), TrainJobs, events.
        self.trainer_crd = False  # a cluster with the Training Operator v1 only, unless a test installs Trainer
        self.runtimes: dict[tuple[str, str, str], dict] = {}
        self.cluster_runtimes_forbidden = False
        self.forbidden_namespaces: set[str] = set()
        self.trainjobs: dict[tuple[str, str], _TrainJob] = {}
        self.events: list[dict] = []

    def create_job(self, ns: str, body: dict) -> _Job:
        job = self.jobs[(ns, body["metadata"]["name"])] = _Job(self, ns, body)
        if self.start_jobs:
            job.start()
        return job

    def create_trainjob(self, ns: str, body: dict) -> _TrainJob:
        job = self.trainjobs[(ns, body["metadata"]["name"])] = _TrainJob(self, ns, body)
        if self.start_jobs:
            job.start()
        return job

    def kubeconfig(self, path: Path, namespace: str = "medrl") -> Path:
        path.write_text(
            json.dumps({
                "apiVersion": "v1", "kind": "Config", "current-context": "standin",
                "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
                "users": [{"name": "standin", "user": {"token": "stand-in-token"}}],
                "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                              "namespace": namespace}}],
            })
        )  # fmt: skip
        return path


@contextlib.contextmanager
def kube_for_launcher(tmp_path: Path, monkeypatch) -> Iterator[KubeStandIn]:
    """The stand-in as the launchers' tests use it: this test's kubeconfig points at it, the test is outside a pod,
    the pods' /tmp is `tmp_path/pod-tmp`; every job's process is killed at the end."""
    with KubeStandIn(tmp_path / "pod-tmp") as standin:
        (tmp_path / "pod-tmp").mkdir()
        monkeypatch.setenv("KUBECONFIG", str(standin.kubeconfig(tmp_path / "kubeconfig")))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield standin
        for job in [*standin.jobs.values(), *standin.trainjobs.values()]:
            job.kill()
