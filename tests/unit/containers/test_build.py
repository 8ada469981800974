"""containers/build.py without building: engine choice, base-image checks, build arguments, wheelhouse stamps and
the self-check's command line. Fake engines are shell scripts on PATH; tests/integration/test_images.py builds."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from containers import build
from medrl.kfp.parameters import DEFAULT_IMAGE, DEFAULT_SLIM_IMAGE

ROOT = Path(__file__).resolve().parents[3]


def fake_engine(folder: Path, name: str, script: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def test_neither_engine_names_what_to_install(bin_dir):
    with pytest.raises(build.BuildError, match=r"neither docker nor podman is installed: install one \(Debian: apt"):
        build.find_engine()
    with pytest.raises(build.BuildError, match="'podman' not found"):
        build.find_engine("podman")


def test_a_docker_client_without_a_daemon_gives_way_to_podman(bin_dir):
    fake_engine(bin_dir, "docker", 'echo "Cannot connect to the Docker daemon" >&2; exit 1\n')
    fake_engine(bin_dir, "podman", "exit 0\n")
    assert build.find_engine() == str(bin_dir / "podman")
    with pytest.raises(build.BuildError, match="docker: Cannot connect to the Docker daemon"):
        build.find_engine("docker")


def test_make_images_with_neither_engine_prints_one_line_and_fails(bin_dir):
    for tool in ("python3", "git", "sh"):
        os.symlink(shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin"), bin_dir / tool)
    out = subprocess.run(
        [shutil.which("make", path="/usr/bin:/bin"), "-s", "images"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": str(bin_dir)},
    )
    assert out.returncode != 0
    assert out.stderr.splitlines()[0] == (
        "error: neither docker nor podman is installed: install one (Debian: apt-get install podman runc)"
    )


def test_base_images_default_to_upstream_and_follow_the_build_arguments():
    assert build.dockerfile_args()["PYTHON_IMAGE"] == "python:3.11-slim"
    assert build.base_images("slim", {}) == {"PYTHON_IMAGE": "python:3.11-slim"}
    train = build.base_images("train", {"PYTHON_IMAGE": "localhost/py:3.11"})
    assert train["PYTHON_IMAGE"] == "localhost/py:3.11"
    assert train["CUDA_RUNTIME_IMAGE"] == "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04"
    assert build.base_images("train-cpu", {}) == {"PYTHON_IMAGE": "python:3.11-slim"}


def test_a_missing_base_names_the_image_and_the_build_argument(bin_dir):
    calls = bin_dir / "calls"
    engine = fake_engine(bin_dir, "podman", f'echo "$@" >> {calls}\nexit 1\n')
    with pytest.raises(build.BuildError) as err:
        build.ensure_bases(str(engine), "judge", {})
    assert "nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 is not present" in str(err.value)
    assert "CUDA_RUNTIME_IMAGE" in str(err.value)
    assert "pull nvidia/cuda" in calls.read_text()  # it tried to pull before giving up
    calls.unlink()
    with pytest.raises(build.BuildError, match="PYTHON_IMAGE"):
        build.ensure_bases(str(engine), "slim", {"PYTHON_IMAGE": "localhost/none:1"}, pull=False)
    assert "pull" not in calls.read_text()  # offline: no pull


def test_podman_gets_the_projects_containers_conf(monkeypatch):
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    assert build.engine_env("/usr/bin/podman")["CONTAINERS_CONF"] == str(ROOT / "containers" / "containers.conf")
    assert "CONTAINERS_CONF" not in build.engine_env("/usr/bin/docker")
    conf = (ROOT / "containers" / "containers.conf").read_text()
    assert 'runtime = "runc"' in conf and 'cgroup_manager = "cgroupfs"' in conf and "nofile=1024:1024" in conf


def test_an_engine_that_hangs_is_stopped_with_a_message(bin_dir, monkeypatch):
    monkeypatch.setattr(build, "ENGINE_TIMEOUT", 1)
    fake_engine(bin_dir, "podman", "exec /bin/sleep 30\n")
    with pytest.raises(build.BuildError, match="did not finish within 1 s"):
        build.find_engine("podman")


def test_wheelhouse_is_complete_only_for_the_lock_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "WHEELHOUSE", tmp_path)
    assert not build.wheelhouse_ready("slim")
    (tmp_path / "slim").mkdir()
    (tmp_path / "slim" / ".complete").write_text(build.lock_digest("slim") + "\n")
    assert build.wheelhouse_ready("slim")
    (tmp_path / "slim" / ".complete").write_text("0" * 64 + "\n")  # the lock changed since
    assert not build.wheelhouse_ready("slim")
    assert build.judge_requirement() == "vllm==0.33.0"


def test_offline_build_refuses_an_incomplete_wheelhouse(tmp_path, monkeypatch, bin_dir):
    monkeypatch.setattr(build, "WHEELHOUSE", tmp_path)
    engine = fake_engine(bin_dir, "podman", "exit 0\n")  # every base "exists"
    with pytest.raises(build.BuildError, match=r"wheelhouse/slim is not complete: run `make wheelhouse`"):
        build.build(str(engine), "slim", "x:1", {}, wheelhouse=True, offline=True)


def test_filling_a_targets_wheelhouses_readies_its_offline_build(tmp_path, monkeypatch, bin_dir, capsys):
    """train-cpu's build reads the slim wheelhouse too (its wheel stage's build backend): both are filled, by the
    test fixtures' call and by `make wheelhouse WHEELHOUSE_IMAGES=train-cpu` alike."""
    monkeypatch.setattr(build, "WHEELHOUSE", tmp_path)
    filled = []

    def fill(name, python=None, torch_index=None):  # a stand-in for the download: writes the stamp alone
        filled.append(name)
        (tmp_path / name).mkdir()
        (tmp_path / name / ".complete").write_text(build.lock_digest(name))
        return True

    monkeypatch.setattr(build, "fill_wheelhouse", fill)
    assert build.fill_wheelhouses("train-cpu", torch_index=None) == ["slim", "train-cpu"]
    monkeypatch.setattr(build, "ensure_bases", lambda *a, **kw: None)
    monkeypatch.setattr(build, "run", lambda *a, **kw: subprocess.CompletedProcess(a, 0))
    build.build("podman", "train-cpu", "x:1", {}, wheelhouse=True, offline=True)  # no "not complete" error
    shutil.rmtree(tmp_path / "slim")
    shutil.rmtree(tmp_path / "train-cpu")
    filled.clear()
    assert build.main(["wheelhouse", "--images", "train-cpu", "--torch-cpu-index", ""]) == 0
    assert filled == ["slim", "train-cpu"], capsys.readouterr()


def test_offline_needs_the_wheelhouse_and_targets_are_checked(bin_dir, capsys):
    fake_engine(bin_dir, "podman", "exit 0\n")
    assert build.main(["images", "--engine", "podman", "--offline"]) == 2
    assert "--offline needs --wheelhouse" in capsys.readouterr().err
    assert build.main(["images", "--engine", "podman", "--targets", "gpu"]) == 2
    assert "unknown target 'gpu'" in capsys.readouterr().err


def test_self_check_runs_as_the_pods_do():
    cmd = build.self_check_command("podman", "slim", "medrl-slim:0.1.0")
    assert cmd[:2] == ["podman", "run"] and cmd[-4:] == ["medrl", "doctor", "--image", "slim"]
    for flag in (["--user", "1000:1000"], ["--tmpfs", "/tmp"], ["--network", "none"]):
        assert any(cmd[i : i + 2] == flag for i in range(len(cmd)))
    assert "--read-only" in cmd
    judge = build.self_check_command("podman", "judge", "medrl-judge:0.1.0")
    assert judge[-4] == "/opt/vllm/bin/python" and judge[-3] == "-c" and judge[-1] == "judge"
    assert "def image_checks" in judge[-2]  # the check's own source: the judge image has no medrl


def test_make_images_tags_what_the_pipeline_runs_by_default():
    assert build.image_tag(build.REGISTRY, "train") == DEFAULT_IMAGE
    assert build.image_tag(build.REGISTRY, "slim") == DEFAULT_SLIM_IMAGE
    assert (
        build.image_tag("registry.hospital.internal/medrl", "judge")
        == "registry.hospital.internal/medrl/medrl-judge:0.1.0"
    )
    make = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert f"--registry {build.REGISTRY} " in make
