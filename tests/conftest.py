"""Shared fixtures: offline Hugging Face, a tiny model and a synthetic dataset built once per session."""

from __future__ import annotations

import os

# Forced, not defaulted: a developer's HF_HUB_OFFLINE=0 must not let tests download models or pass only because a
# model happens to be in their cache (also TRANSFORMERS_OFFLINE, which huggingface_hub reads as well).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

# Subprocesses (the CLI, kfp.local tasks) import this checkout's code, not another install of medrl.
_ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_ROOT / "src"), str(_ROOT), *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
)

import pytest  # noqa: E402

from medrl.config import DataConfig  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Qwen2-VL checkpoint (random weights, tokenizer trained here)."""
    from medrl.models.tiny import build_tiny

    return build_tiny("qwen2-vl", tmp_path_factory.mktemp("tiny") / "qwen2-vl", seed=0)


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    """A small prepared synthetic dataset (64 train / 16 test)."""
    from medrl.data.prep import prepare

    out = tmp_path_factory.mktemp("data") / "synthetic"
    prepare(DataConfig(source="synthetic", train_size=64, test_size=16, seed=0), out)
    return out
