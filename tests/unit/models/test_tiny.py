"""Tiny models where they cannot be built: the slim image has no torchvision, which Qwen-VL processors need."""

from __future__ import annotations

import importlib.util
from typing import get_args

import pytest

from medrl.models import tiny
from medrl.models.load import ModelError


def test_a_qwen_tiny_model_without_torchvision_names_where_to_build_it(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision" else real(name, *a))
    with pytest.raises(ModelError, match=r"tiny:qwen2-vl: a Qwen-VL processor needs torchvision.*--image"):
        tiny.build_tiny("qwen2-vl", tmp_path / "m")
    assert not (tmp_path / "m").exists()  # refused before anything is written


def test_the_cli_choice_of_architectures_is_every_builder():
    """`medrl tiny-model --arch` offers TinyArch: a builder missing from it could not be chosen, a name without a
    builder would pass the CLI and fail inside build_tiny."""
    assert sorted(get_args(tiny.TinyArch)) == sorted(tiny.ARCHS)
