"""requirements-gpu.lock (make lock-gpu; its currency is checked with the other locks in test_lock.py) holds one GPU
environment in which vLLM sits inside TRL's supported range and torch's CUDA matches the image's base."""

from __future__ import annotations

import importlib.metadata as md
import re
from pathlib import Path

from packaging.requirements import Requirement

from tools.lock import read_lock

ROOT = Path(__file__).resolve().parents[3]
LOCK = "requirements-gpu.lock"


def test_lock_holds_the_gpu_stack_with_the_overrides_torch():
    lock = read_lock(ROOT / LOCK)
    for must in ("torch", "transformers", "trl", "vllm", "deepspeed", "flash-attn", "peft", "kfp"):
        assert must in lock
    overrides = {Requirement(r).name: Requirement(r) for r in (ROOT / "requirements-gpu.in").read_text().splitlines()
                 if r.strip() and not r.startswith("#")}  # fmt: skip
    assert lock["torch"] == "2.13.0" and overrides["torch"].specifier.contains(lock["torch"])
    assert lock["vllm"] == "0.30.0"


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
