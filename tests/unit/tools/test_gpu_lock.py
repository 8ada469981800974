"""requirements-gpu.lock is current (offline: its header's digest of the inputs) and holds one GPU environment in
which vLLM sits inside TRL's supported range and every declared pin holds."""

from __future__ import annotations

import importlib.metadata as md
import re
import shutil
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tools.gpu_lock import LOCK, OVERRIDES, inputs, inputs_digest, locked_digest, metadata_wheel
from tools.lock import read_lock

ROOT = Path(__file__).resolve().parents[3]


def test_lock_is_current_with_pyproject_and_overrides():
    assert locked_digest(ROOT / LOCK) == inputs_digest(ROOT), "pyproject or requirements-gpu.in changed: make lock-gpu"


def test_lock_satisfies_every_input_and_holds_the_gpu_stack():
    lock = read_lock(ROOT / LOCK)
    for req in inputs(ROOT):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is missing from {LOCK}: make lock-gpu"
        assert req.specifier.contains(lock[name], prereleases=True), f"{LOCK} pins {name}=={lock[name]}, not {req}"
    for must in ("torch", "transformers", "trl", "vllm", "deepspeed", "flash-attn", "peft", "kfp"):
        assert must in lock


def test_vllm_is_inside_the_range_trl_supports():
    lock = read_lock(ROOT / LOCK)
    trl = md.distribution("trl")
    assert trl.version == lock["trl"], "the CPU environment's TRL is the GPU lock's TRL"
    (declared,) = [Requirement(r) for r in trl.requires or [] if Requirement(r).name == "vllm"]
    assert declared.specifier.contains(lock["vllm"]), f"TRL {trl.version} supports vllm{declared.specifier} only"


def test_torch_cuda_major_matches_the_image_base():
    lock = read_lock(ROOT / LOCK)
    base = re.search(r"^ARG CUDA_VERSION=(\d+)\.", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and lock["nvidia-cuda-runtime"].split(".")[0] == base.group(1)


def test_digest_follows_pyproject_and_overrides(tmp_path):
    for name in ("pyproject.toml", OVERRIDES):
        shutil.copy(ROOT / name, tmp_path / name)
    before = inputs_digest(tmp_path)
    overrides = tmp_path / OVERRIDES
    overrides.write_text(overrides.read_text().replace("vllm==0.30.0", "vllm==0.29.0"))
    assert {str(r) for r in inputs(tmp_path)} >= {"vllm==0.29.0", "torch==2.13.0"}
    assert "torch==2.14.1" not in {str(r) for r in inputs(tmp_path)}  # the override replaces the CPU pin
    changed = inputs_digest(tmp_path)
    assert changed != before
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"minio>=7.2,<8"', '"minio>=7.3,<8"'))
    assert inputs_digest(tmp_path) != changed


def test_source_only_packages_reach_the_resolver_as_their_declared_requirements(tmp_path):
    wheel = metadata_wheel("deepspeed", tmp_path)
    version = md.version("deepspeed")
    assert wheel.name == f"deepspeed-{version}-py3-none-any.whl"
    meta = zipfile.ZipFile(wheel).read(f"deepspeed-{version}.dist-info/METADATA").decode()
    assert f"Version: {version}" in meta
    assert set(md.requires("deepspeed")) == {
        line[len("Requires-Dist: ") :] for line in meta.splitlines() if line.startswith("Requires-Dist: ")
    }
