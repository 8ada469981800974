"""The container runner of a local study (`medrl run --runner container`): every step in its image through kfp.local's
DockerRunner, over Docker or Podman, as the cluster runs it: UID 1000, a read-only root file system with a tmpfs /tmp,
artifacts in an S3 store. What it needs (an engine, an s3:// store, the images) is checked before any step runs.

kfp.local bind-mounts one folder into every container: its pipeline root (`steps/` inside a fresh temporary folder,
or inside --pipeline-root), where each step writes its executor output (the small JSON of its return values) for
kfp.local to read back. Nothing of the checkout or of the store is mounted: the steps read and write artifacts in
the S3 store, whose endpoint they reach over this machine's network (host networking: a store on loopback works).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
from kfp import local

from medrl.errors import MedrlError
from medrl.pipelines.study import UID

DOCKER_SOCKET = Path("/var/run/docker.sock")
ENGINE_START_SECONDS = 30
# What the steps get from this environment: the store's endpoint and credentials, medrl's and MLflow's settings.
# Paths of this machine mean nothing inside a container, so variables that hold one stay out.
PASSED_PREFIXES = ("AWS_", "MEDRL_", "MLFLOW_")
PASSED = {"HF_HUB_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM", "PYTHONHASHSEED"}
HOST_PATHS = {"MEDRL_CACHE_DIR", "AWS_CA_BUNDLE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"}
ENGINE_HINT = (
    "install Podman (Debian: apt-get install podman runc) or Docker, or run the steps in this Python environment "
    "with --runner subprocess"
)


class ContainerSetupError(MedrlError):
    """The container runner cannot start: no engine, a store the containers cannot reach, an image not built."""


def check_store(uri: str) -> None:
    """The containers see no folder of this machine: the store must be S3."""
    if not uri.startswith("s3://"):
        raise ContainerSetupError(
            f"--runner container: the store {uri} is a folder on this machine, which the steps' containers cannot "
            "see (nothing of this machine is mounted in them, as in the cluster); give an S3 store, --store "
            "s3://bucket/prefix with AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set (a "
            "SeaweedFS or MinIO on this machine works: the containers share its network)"
        )


def step_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables the steps' containers get from `env` (default: this process's environment)."""
    source = os.environ if env is None else env
    return {k: v for k, v in source.items() if (k.startswith(PASSED_PREFIXES) or k in PASSED) and k not in HOST_PATHS}


def connect(url: str) -> docker.DockerClient | None:
    """A client of the Docker API at `url`, or None when nothing answers there."""
    try:
        client = docker.DockerClient(base_url=url, timeout=10)  # asks the server's API version
        if client.ping():
            return client
        client.close()
    except (docker.errors.DockerException, OSError):
        pass
    return None


@contextlib.contextmanager
def podman_service(folder: Path) -> Iterator[str]:
    """`podman system service` on a private socket in `folder` for as long as the run lasts; yields its URL."""
    url = f"unix://{folder / 'podman.sock'}"
    log = folder / "podman-service.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["podman", "system", "service", "--time=0", url], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ENGINE_START_SECONDS
        while not (Path(url[len("unix://") :]).exists() and (client := connect(url))):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-500:].strip()
                raise ContainerSetupError(
                    f"--runner container: `podman system service` did not start ({tail or 'no output'}); check that "
                    "`podman run --rm IMAGE true` works here (as root with runc: see README, containers.conf), or "
                    "set DOCKER_HOST to a running engine's socket, or run the steps here with --runner subprocess"
                )
            time.sleep(0.2)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def engine() -> Iterator[docker.DockerClient]:
    """A Docker API for the run, and DOCKER_HOST set to it while the run lasts (kfp.local's handler reads it):
    DOCKER_HOST's if set, else Docker's socket if it answers, else a Podman service of the run's own."""
    given = os.environ.get("DOCKER_HOST")
    with contextlib.ExitStack() as stack:
        if given:
            url, client = given, connect(given)
            if client is None:
                raise ContainerSetupError(
                    f"--runner container: DOCKER_HOST={given} does not answer; start the engine behind it (Docker: "
                    f"systemctl start docker; Podman: podman system service --time=0 {given}), or unset DOCKER_HOST "
                    "to let medrl start Podman itself"
                )
        elif DOCKER_SOCKET.exists() and (client := connect(url := f"unix://{DOCKER_SOCKET}")):
            pass
        elif shutil.which("podman"):
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medrl-podman-")))
            url = stack.enter_context(podman_service(folder))
            client = connect(url)
            if client is None:
                raise ContainerSetupError(
                    f"--runner container: podman's service at {url} does not answer; {ENGINE_HINT}"
                )
        else:
            raise ContainerSetupError(
                "--runner container: no container engine here (neither DOCKER_HOST, nor Docker's socket "
                f"{DOCKER_SOCKET}, nor the podman command); {ENGINE_HINT}"
            )
        stack.callback(client.close)
        os.environ["DOCKER_HOST"] = url
        try:
            yield client
        finally:
            if given is None:
                os.environ.pop("DOCKER_HOST", None)


def local_image(client: docker.DockerClient, image: str, flag: str) -> str:
    """The name the engine knows `image` by (Podman names an image built as NAME:TAG localhost/NAME:TAG), so that
    kfp.local finds it instead of trying to pull it; none: a mistake of the user's, with the fix."""
    wanted = image if ":" in image.rsplit("/", 1)[-1] else f"{image}:latest"
    tags = {t for i in client.images.list() for t in i.tags}
    for name in (wanted, f"localhost/{wanted}", f"docker.io/{wanted}", f"docker.io/library/{wanted}"):
        if name in tags:
            return name
    raise ContainerSetupError(
        f"--runner container: image {image} is not among this engine's images; build it with `make images` and "
        f"give the tag it prints with {flag} (`podman images` or `docker images` lists the images there)"
    )


def container_runner(pipeline_root: Path, env: dict[str, str] | None = None) -> local.DockerRunner:
    """kfp.local's DockerRunner set up as the cluster's pods are (see k8s/ and pipelines/study.py): non-root, a
    read-only root file system, /tmp the only place to write, this machine's network (for a store on loopback)."""
    # The steps run as UID 1000 and write their executor output under the pipeline root: sticky and writable by
    # all, like /tmp, since that UID is no user of this machine.
    pipeline_root.chmod(0o1777)
    return local.DockerRunner(
        user=f"{UID}:{UID}",
        read_only=True,
        tmpfs={"/tmp": "rw,mode=1777"},
        network_mode="host",
        environment=step_environment(env),
    )


def describe_engine(client: docker.DockerClient) -> str:
    """'podman 4.3.1' or 'docker 27.1', for the run's log line."""
    version = client.version()
    name = "podman" if "podman" in str(version.get("Components", "")).lower() else "docker"
    return f"{name} {version.get('Version', '?')}"
