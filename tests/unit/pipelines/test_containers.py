"""The container runner's set-up (medrl.pipelines.containers): what it refuses before any step runs, what the steps'
containers get. The engine itself (Podman, as root with runc): tests/integration/test_container_runner.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from medrl.pipelines import containers
from medrl.pipelines.local import run_study
from medrl.pipelines.study import UID


def test_a_folder_store_stops_the_run_before_anything_is_written(tmp_path):
    for store in (str(tmp_path / "runs"), f"file://{tmp_path / 'runs'}"):
        with pytest.raises(containers.ContainerSetupError, match=r"give an S3 store, --store s3://bucket/prefix"):
            run_study(preset="demo", store_uri=store, runner="container")
        assert not (tmp_path / "runs").exists()


def test_no_engine_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no podman on it
    monkeypatch.setattr(containers, "DOCKER_SOCKET", tmp_path / "docker.sock")
    with (
        pytest.raises(containers.ContainerSetupError, match=r"apt-get install podman runc\) or Docker"),
        containers.engine(),
    ):
        pass
    assert "DOCKER_HOST" not in os.environ


def test_a_docker_host_that_does_not_answer_is_named(tmp_path, monkeypatch):
    url = f"unix://{tmp_path / 'nothing.sock'}"
    monkeypatch.setenv("DOCKER_HOST", url)
    with (
        pytest.raises(containers.ContainerSetupError, match=rf"DOCKER_HOST={url} does not answer"),
        containers.engine(),
    ):
        pass
    assert os.environ["DOCKER_HOST"] == url


def test_the_command_line_exits_2_without_a_traceback(tmp_path):
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path / 'nothing.sock'}")
    out = subprocess.run(
        [sys.executable, "-m", "medrl", "run", "--preset", "demo", "--runner", "container",
         "--store", "s3://medrl/runs"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr[-2000:]
    assert "error: --runner container: DOCKER_HOST=" in out.stderr and "Traceback" not in out.stderr


def image(*tags):
    return SimpleNamespace(tags=list(tags))


def test_an_image_is_found_under_the_name_podman_gives_it():
    client = SimpleNamespace(
        images=SimpleNamespace(list=lambda: [image("localhost/medrl-slim:0.1.0"), image("ghcr.io/medrl/medrl:0.1.0")])
    )
    assert containers.local_image(client, "medrl-slim:0.1.0", "--image") == "localhost/medrl-slim:0.1.0"
    assert containers.local_image(client, "ghcr.io/medrl/medrl:0.1.0", "--train-image") == "ghcr.io/medrl/medrl:0.1.0"
    with pytest.raises(
        containers.ContainerSetupError,
        match=r"image medrl-train-cpu is not .* `make images` and give the tag .* with --train-image",
    ):
        containers.local_image(client, "medrl-train-cpu", "--train-image")  # :latest, which is not there


def test_the_steps_get_the_store_settings_and_no_path_of_this_machine():
    env = {
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
        "MEDRL_PUSHGATEWAY_URL": "http://127.0.0.1:9091", "HF_HUB_OFFLINE": "1",
        "MEDRL_CACHE_DIR": "/root/.cache/medrl", "AWS_CA_BUNDLE": "/etc/ssl/x.pem", "PATH": "/usr/bin",
        "HOME": "/root", "VIRTUAL_ENV": "/work/.venv",
    }  # fmt: skip
    assert containers.step_environment(env) == {
        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
        "MEDRL_PUSHGATEWAY_URL": "http://127.0.0.1:9091", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip


def test_the_runner_runs_steps_as_the_cluster_does(tmp_path):
    runner = containers.container_runner(tmp_path, {"AWS_ACCESS_KEY_ID": "k"})
    args = runner.container_run_args
    assert args["user"] == f"{UID}:{UID}" and args["read_only"] is True
    assert set(args["tmpfs"]) == {"/tmp"} and args["network_mode"] == "host"
    assert args["environment"] == {"AWS_ACCESS_KEY_ID": "k"}
    assert tmp_path.stat().st_mode & 0o7777 == 0o1777  # UID 1000 writes its executor output there
