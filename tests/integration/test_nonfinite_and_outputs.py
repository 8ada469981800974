"""`medrl train` that cannot end well ends early and commits nothing: a model whose weights hold NaN stops at its
first step with an error naming the arm and the step (exit 2), with non-finite steps allowed too (its weights stay
NaN); a GRPO run whose logits overflow stops with medrl's error, not torch's; an --out that holds someone else's
files, or a committed model without --replace, is refused before any training; save_only_model checkpoints hold no
optimizer state."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from medrl import store
from medrl.config import DataConfig, load_config
from tests.support.cli import medrl_here

pytestmark = pytest.mark.slow

ARM = """
arms:
  a: {{method: sft, learning_rate: 1.0e-3, max_steps: 3, per_device_batch_size: 2, grad_accum: 1, save_steps: {save},
      max_nonfinite_steps: {allowed}, save_only_model: {only_model}}}
"""


def study(tmp_path: Path, save: int = 100, allowed: int = 0, only_model: bool = False) -> Path:
    config = tmp_path / "study.yaml"
    config.write_text(ARM.format(save=save, allowed=allowed, only_model=str(only_model).lower()))
    return config


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from medrl.data.prep import prepare

    out = tmp_path_factory.mktemp("safety-data") / "synthetic"
    with store.commit_dir(store.normalize(str(out))) as staging:
        prepare(DataConfig(source="synthetic", train_size=8, test_size=2, seed=0), staging)
    return out


@pytest.fixture(scope="module")
def poisoned(tiny_model, tmp_path_factory) -> Path:
    """The tiny model with one NaN in its final norm, committed as a medrl model (its manifest matches): what a
    diverged earlier stage would hand on."""
    out = tmp_path_factory.mktemp("poisoned") / "model"
    with store.commit_dir(store.normalize(str(out))) as staging:
        for path in tiny_model.iterdir():
            if path.name not in (store.MANIFEST, store.COMMITTED):
                shutil.copy(path, staging / path.name)
        weights = load_file(staging / "model.safetensors")
        norm = next(k for k in weights if k.endswith(("model.norm.weight", "language_model.norm.weight")))
        weights[norm][0] = float("nan")
        save_file(weights, staging / "model.safetensors", metadata={"format": "pt"})
    return out


def medrl_train(config: Path, data: Path, init: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    # In this process (tests/support/cli.py), as the other training tests: no new interpreter importing torch.
    args = ["--config", str(config), "--data", str(data), "--init", str(init), "--out", str(out), *extra]
    return medrl_here("train", *args)


def test_a_non_finite_loss_stops_training_and_nothing_is_committed(poisoned, data, tmp_path):
    out = tmp_path / "model"
    run = medrl_train(study(tmp_path), data, poisoned, out)
    assert run.returncode == 2, run.stderr[-3000:]
    assert "error: arm a: non-finite loss and grad_norm at step 1" in run.stderr, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    assert not out.exists()


def test_a_non_finite_model_is_never_committed_even_when_steps_are_allowed(poisoned, data, tmp_path):
    out = tmp_path / "model"
    run = medrl_train(study(tmp_path, allowed=100), data, poisoned, out)
    assert run.returncode == 2, run.stderr[-3000:]
    # no step brings NaN weights back: the guard stops after the first step (issue 30), before the commit's check
    stop = r"error: arm a: non-finite weights after step 1 \([\w.]+\); training stopped and nothing is committed"
    assert re.search(stop, run.stderr), run.stderr[-3000:]
    assert not out.exists() and not (tmp_path / "model.work" / "model").exists()


GRPO = """
arms:
  g: {method: grpo, learning_rate: 1.0e+30, max_steps: 3, per_device_batch_size: 2, num_generations: 2, grad_accum: 1,
      max_completion_length: 8, beta: 0.0, rewards: [{name: "tests.support.varied_reward_run:varied_reward"}]}
"""


def test_grpo_diverging_stops_with_medrls_error_not_torchs_sampling_traceback(tiny_model, data, tmp_path):
    """issue 30: learning_rate 1e30 makes the weights huge after step 1, the logits of step 2's rollouts overflow,
    and TRL's sampling used to fail with `RuntimeError: probability tensor contains inf/nan` (exit 1, a
    traceback). The `varied` reward (tests/support/varied_reward_run.py) gives the group different rewards,
    so step 1 has a gradient at all. The work folder stays, with the log of step 1 and no model."""
    config = tmp_path / "study.yaml"
    config.write_text(GRPO)
    out = tmp_path / "model"
    run = subprocess.run(
        [sys.executable, "-m", "tests.support.varied_reward_run", "train", "--config", str(config), "--data",
         str(data), "--init", str(tiny_model), "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-3000:]
    assert "error: arm g: sampling at step 2 met non-finite next-token probabilities" in run.stderr, run.stderr[-3000:]
    assert f"stay in {tmp_path / 'model.work'} (delete it when done)" in run.stderr
    assert "Traceback" not in run.stderr and "RuntimeError" not in run.stderr
    assert not out.exists() and not (tmp_path / "model.work" / "model").exists()
    logged = (tmp_path / "model.work" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1]


def test_an_out_holding_other_files_is_refused_before_training(tiny_model, data, tmp_path):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "thesis.txt").write_text("notes")
    run = medrl_train(study(tmp_path), data, tiny_model, out)
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"error: {out} is not empty and not a medrl artifact" in run.stderr
    assert (out / "thesis.txt").read_text() == "notes" and [p.name for p in out.iterdir()] == ["thesis.txt"]
    assert not (tmp_path / "thesis.work").exists()  # no training started: it writes its log there


def test_a_committed_model_is_replaced_only_with_replace_and_only_once_the_new_one_is_committed(
    tiny_model, poisoned, data, tmp_path
):
    """issue 30: `medrl train --out M` onto a committed model used to replace it without a word."""
    out = tmp_path / "model"
    store.commit_from(tiny_model, store.normalize(str(out)))  # a model trained earlier
    before = (out / store.MANIFEST).read_bytes()

    refused = medrl_train(study(tmp_path), data, tiny_model, out)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"error: --out {out}: a model is already committed there" in refused.stderr
    assert "pass --replace" in refused.stderr and "Traceback" not in refused.stderr
    assert (out / store.MANIFEST).read_bytes() == before and not (tmp_path / "model.work").exists()

    diverged = medrl_train(study(tmp_path), data, poisoned, out, "--replace")  # fails before its commit
    assert diverged.returncode == 2 and "non-finite loss" in diverged.stderr, diverged.stderr[-3000:]
    assert (out / store.MANIFEST).read_bytes() == before  # the old model stays whole
    store.verify(store.normalize(str(out)))

    replaced = medrl_train(study(tmp_path), data, tiny_model, out, "--replace")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert (out / "train_summary.json").is_file() and (out / store.MANIFEST).read_bytes() != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging or trash left


@pytest.mark.parametrize("only_model", [True, False])
def test_save_only_model_checkpoints_hold_no_optimizer_state(only_model, tiny_model, data, tmp_path):
    from medrl.train import train_arm

    cfg = load_config(file=study(tmp_path, save=1, only_model=only_model))
    train_arm(cfg, "a", data, str(tiny_model), tmp_path / "out", tmp_path / "work")
    checkpoint = tmp_path / "work" / "checkpoints" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").is_file() and (checkpoint / store.COMMITTED).is_file()
    assert (checkpoint / "optimizer.pt").is_file() is not only_model
    assert (checkpoint / "scheduler.pt").is_file() is not only_model
    assert torch.isfinite(load_file(tmp_path / "out" / "model.safetensors")["lm_head.weight"]).all()
