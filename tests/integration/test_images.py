"""The images, built and run: the slim image and the CPU variant of the train image, from the stand-in base (Debian
bookworm's python3.11 imported into podman: a stand-in for python:3.11-slim, which cannot be pulled here) and the
wheelhouse, with no network inside the build (pip --no-index), each running its self-check as the pods run it:
UID 1000, read-only root file system, /tmp a tmpfs, no network.

The first run makes the stand-in base (about 3.5 min), the wheelhouse (about 2.5 min) and both images; later runs
reuse all of them (podman's layer cache, the wheelhouse's stamp per lock)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from containers import build

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.timeout(3600)]
TAG = "localhost/medrl-test-{target}:0.1.0"
TARGETS = ("slim", "train-cpu")


@pytest.fixture(scope="module")
def engine() -> str:
    try:
        return build.find_engine("podman")
    except build.BuildError as err:
        pytest.fail(f"{err} (as root, `make system-packages` installs podman, runc and debootstrap)")


@pytest.fixture(scope="module")
def images(engine) -> dict[str, str]:
    build.make_standin(engine)
    for name in TARGETS:
        # torch's CPU build comes from pip's configured find-links here (PyTorch's index is out of reach).
        build.fill_wheelhouses(name, torch_index=None)
    tags = {}
    for target in TARGETS:
        tags[target] = TAG.format(target=target)
        build.build(engine, target, tags[target], {"PYTHON_IMAGE": build.STANDIN}, wheelhouse=True, offline=True)
    return tags


@pytest.mark.parametrize("target", TARGETS)
def test_the_image_passes_its_self_check_as_the_pods_run_it(engine, images, target):
    out = build.self_check(engine, target, images[target])
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "[ok  ] user: UID 1000, GID 1000" in lines
    assert any(line.startswith("[ok  ] nothing writable outside /tmp: read-only root") for line in lines)
    assert any(line.startswith("[ok  ] lock: ") for line in lines)
    for step in ("start", "prep", "train", "report", "cleanup"):
        assert any(line.startswith(f"[ok  ] step {step}: ") for line in lines), step
    if target == "slim":  # said, not skipped: torchvision's CPU build is out of reach here (see the README)
        assert any(line.startswith("[n/a ] tiny models: no torchvision in this image") for line in lines)
    if target == "train-cpu":
        assert any(line.startswith("[ok  ] step evaluate: ") for line in lines)
        for dist in ("torch", "torchvision", "transformers", "trl", "peft", "deepspeed"):
            assert any(line.startswith(f"[ok  ] {dist}: imports, version ") for line in lines), dist
        assert "[n/a ] vllm: not part of the CPU variant (requirements.lock; GPU image only)" in lines
        assert "[n/a ] flash-attn: not part of the CPU variant (requirements.lock; GPU image only)" in lines


def test_the_self_check_fails_as_root_on_a_writable_root(engine, images):
    """The check can fail: the same image run as root without --read-only."""
    cmd = [engine, "run", "--rm", "--user", "0", "--network", "none", images["slim"], "medrl", "doctor", "--image"]
    out = subprocess.run([*cmd, "slim"], env=build.engine_env(engine), capture_output=True, text=True, timeout=600)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "[FAIL] user: runs as UID 0, GID 0" in out.stdout
    assert "[FAIL] nothing writable outside /tmp: writable: ['/'" in out.stdout


def test_a_missing_base_image_stops_the_build_naming_it_and_its_argument(engine):
    base = "localhost/medrl-test-no-such-base:0"
    script = str(build.ROOT / "containers" / "build.py")
    args = ["--targets", "slim", "--registry", "localhost/medrl-test-never", "--arg", f"PYTHON_IMAGE={base}"]
    out = subprocess.run(
        [sys.executable, script, "images", "--engine", "podman", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert f"base image {base} is not present and cannot be pulled" in out.stderr
    assert "set the build argument PYTHON_IMAGE" in out.stderr
