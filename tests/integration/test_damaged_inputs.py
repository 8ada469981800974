"""Damaged inputs are refused by name before anything is trained or evaluated (issues 16 and 17): a committed model
whose weights no longer match its MANIFEST, and a plain model folder whose safetensors header is garbage."""

from __future__ import annotations

import shutil

import pytest

from medrl import store
from tests.support.cli import medrl_here
from tests.support.tiny_runs import committed_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return committed_synthetic(tmp_path_factory.mktemp("data") / "synthetic", train=8, test=4)


def _evaluate(model, data, out):
    # In this process (tests/support/cli.py): a new interpreter would import torch only to print the refusal.
    return medrl_here("evaluate", "--preset", "demo", "--model", str(model), "--data", str(data), "--out", str(out))


def test_a_committed_model_with_flipped_bytes_is_refused(tiny_model, data, tmp_path):
    model = tmp_path / "model"
    with store.commit_dir(store.normalize(str(model))) as staging:
        shutil.copytree(tiny_model, staging, dirs_exist_ok=True)
    weights = model / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte inside a tensor: still loads, silently wrong
    weights.write_bytes(bytes(raw))
    out = _evaluate(model, data, tmp_path / "eval")
    assert out.returncode == 2 and "damaged" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_a_model_folder_with_a_garbage_header_is_named(tiny_model, data, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").write_bytes(b"\xff" * 64)
    out = _evaluate(model, data, tmp_path / "eval")
    assert out.returncode == 2 and "weights cannot be read" in out.stderr and "Traceback" not in out.stderr, out.stderr
