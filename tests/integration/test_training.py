"""Every training method on the tiny model with real TRL / peft code: the parameters that should train all
change and the frozen ones do not; GRPO raises the accuracy reward; a killed run resumes exactly where the
uninterrupted one would be; two processes (torchrun, gloo) end with identical weights."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from medrl.config import load_config
from medrl.data.records import iter_jsonl, write_jsonl
from medrl.store.checkpoints import latest_checkpoint, step_of
from medrl.train import train_arm
from tests.support.tiny_runs import committed_synthetic

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]

# Small enough for seconds per run; GRPO settings shared by the GRPO, resume and torchrun tests. The settings are
# defaults of the `train:` block, so that each method takes the ones it has.
ARM = """
arms:
  a: {{method: {method}}}
train:
    learning_rate: {lr}
    max_steps: {steps}
    per_device_batch_size: {batch}
    grad_accum: 1
    num_generations: 4
    max_completion_length: 40
    temperature: 1.0
    beta: 0.04
    save_steps: {save_steps}
    seed: 0
    lora: {{r: 4, alpha: 8, dropout: 0.0, freeze_vision: {freeze_vision}}}
    rewards: {rewards}
"""


def arm_yaml(method, lr=1e-3, steps=3, batch=2, save_steps=100, freeze_vision=True, rewards=None):
    rewards = rewards or "[{name: format}, {name: accuracy}]"
    return ARM.format(
        method=method,
        lr=lr,
        steps=steps,
        batch=batch,
        save_steps=save_steps,
        freeze_vision=str(freeze_vision).lower(),
        rewards=rewards,
    )


def subprocess_env(**extra) -> dict:
    src = str(ROOT / "src")  # this checkout's code, not an installed copy
    path = os.pathsep.join(p for p in (src, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, **extra}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return committed_synthetic(tmp_path_factory.mktemp("train-data") / "synthetic", train=512, test=16)


@pytest.fixture(scope="module")
def warm_model(tiny_model, data, tmp_path_factory) -> Path:
    """The tiny model after a short SFT (256 steps): it writes the think/answer format about 60% of the time at
    temperature 1 and picks the right region of the lesion about as often as chance (measured ~0.2-0.35), so
    GRPO has rewards to tell completions apart and room to improve."""
    root = tmp_path_factory.mktemp("warm")
    cfg = load_config(text=arm_yaml("sft", lr=2e-3, steps=256, batch=16))
    train_arm(cfg, "a", data, str(tiny_model), root / "model", root / "work")
    return root / "model"


class Snapshot(TrainerCallback):
    """Copies every parameter when training starts and ends, noting which ones the optimizer trains."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}

    def changed(self) -> set[str]:
        return {n for n in self.before if not torch.equal(self.before[n], self.after[n])}


@pytest.fixture
def snapshot(monkeypatch) -> Snapshot:
    """Adds a Snapshot to the callbacks every trainer gets (the seam in medrl.train.common)."""
    from medrl.train import common

    snap = Snapshot()
    original = common.training_callbacks
    monkeypatch.setattr(common, "training_callbacks", lambda *a, **k: [*original(*a, **k), snap])
    return snap


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_full_training_changes_every_parameter(method, snapshot, tiny_model, data, tmp_path):
    cfg = load_config(text=arm_yaml(method))
    summary = train_arm(cfg, "a", data, str(tiny_model), tmp_path / "out", tmp_path / "work")
    assert summary["global_step"] == 3
    assert snapshot.trainable == set(snapshot.before)  # full fine-tuning: everything trains
    assert snapshot.changed() == snapshot.trainable, sorted(snapshot.trainable - snapshot.changed())
    assert (tmp_path / "out" / "model.safetensors").is_file()


@pytest.mark.parametrize("freeze_vision", [True, False])
def test_lora_trains_the_adapters_only(freeze_vision, snapshot, tiny_model, data, tmp_path):
    cfg = load_config(text=arm_yaml("lora", freeze_vision=freeze_vision))
    train_arm(cfg, "a", data, str(tiny_model), tmp_path / "out", tmp_path / "work")
    adapters = {n for n in snapshot.before if "lora_" in n}
    assert adapters and snapshot.trainable == adapters
    assert snapshot.changed() == adapters, sorted(adapters - snapshot.changed())  # frozen weights stay put
    in_vision = {n for n in adapters if ".visual." in n}
    assert bool(in_vision) is not freeze_vision
    # the saved model is the merged one: an ordinary checkpoint with no adapter left in it
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert not any("lora_" in key for key in saved)


ALL_REWARDS = "[{name: format}, {name: accuracy}, {name: semantic, weight: 0.5}, {name: ecr, cap: 8}, {name: cwr}]"


@pytest.mark.parametrize(("method", "rewards"), [("grpo", None), ("dr_grpo", ALL_REWARDS)])
def test_grpo_changes_every_parameter(method, rewards, snapshot, warm_model, data, tmp_path):
    """beta 0: no KL term, so every change comes from reward advantages (the semantic reward's judge is the
    deterministic keyword stand-in)."""
    cfg = load_config(text=arm_yaml(method, rewards=rewards).replace("beta: 0.04", "beta: 0.0"))
    summary = train_arm(cfg, "a", data, str(warm_model), tmp_path / "out", tmp_path / "work")
    assert summary["global_step"] == 3
    assert snapshot.trainable == set(snapshot.before)
    assert snapshot.changed() == snapshot.trainable, sorted(snapshot.trainable - snapshot.changed())
    logged = json.loads((tmp_path / "work" / "train_log.jsonl").read_text().splitlines()[0])
    names = [r.name for r in cfg.arms["a"].rewards]
    assert {f"rewards/{name}/mean" for name in names} <= set(logged)  # each reward under its own name


def test_grpo_raises_the_accuracy_reward(warm_model, data, tmp_path):
    """GRPO on the questions whose lesion is in the lower left: what 30 tiny steps can learn there is to favour
    that answer (reading the image takes far longer), so the accuracy reward of the samples climbs (calibration
    2026-12-02: 0.55 over the first 10 steps -> 0.84 over the last 10; the warm model favours upper left already,
    0.73 there, so that quadrant leaves less room). 32 samples a step (4 prompts x 8),
    temperature 0.7, no KL term, as in the chest X-ray learning test."""
    subset = tmp_path / "lower-left"
    shutil.copytree(data, subset)
    rows = [r for r in iter_jsonl(subset / "train.jsonl") if r["answer"] == "lower left"]
    write_jsonl(subset / "train.jsonl", rows)
    assert len(rows) >= 100
    steps = 30
    text = arm_yaml("grpo", lr=5e-4, steps=steps, batch=4)
    for old, new in (("num_generations: 4", "num_generations: 8"), ("temperature: 1.0", "temperature: 0.7")):
        text = text.replace(old, new)
    cfg = load_config(text=text.replace("beta: 0.04", "beta: 0.0"))
    train_arm(cfg, "a", subset, str(warm_model), tmp_path / "out", tmp_path / "work")
    rows = [json.loads(line) for line in (tmp_path / "work" / "train_log.jsonl").read_text().splitlines()]
    accuracy = [r["rewards/accuracy/mean"] for r in rows if "rewards/accuracy/mean" in r]
    assert len(accuracy) == steps
    first, last = accuracy[: steps // 3], accuracy[-steps // 3 :]
    assert sum(last) / len(last) > sum(first) / len(first) + 0.14, accuracy  # observed 0.55 -> 0.84 (+0.30)


# ------------------------------------------------------------------------------------------------ resume


def ledger(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_killed_run_resumes_as_if_never_stopped(warm_model, data, tmp_path):
    """Kills `medrl train` (SIGKILL) after its checkpoint at step 2, resumes it with --resume, and compares it with
    an uninterrupted run: same prompts step by step, steps continue, final weights within 1e-6 (CPU, fp32)."""
    config = tmp_path / "study.yaml"
    rewards = "[{name: format}, {name: accuracy}, {name: 'tests.support.ledger_run:ledger_reward', weight: 0.0}]"
    config.write_text(arm_yaml("grpo", lr=1e-3, steps=8, batch=2, save_steps=2, rewards=rewards))

    def command(name, *extra):
        return [
            sys.executable, str(ROOT / "tests" / "support" / "ledger_run.py"), "train", "--config", str(config),
            "--data", str(data), "--init", str(warm_model), "--out", str(tmp_path / name), *extra,
        ]  # fmt: skip

    whole = subprocess.run(
        command("whole"), env=subprocess_env(MEDRL_LEDGER=str(tmp_path / "whole.jsonl")), capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip
    assert whole.returncode == 0, whole.stderr[-3000:]

    checkpoints = tmp_path / "cut.work" / "checkpoints"
    run = subprocess.Popen(
        command("cut"), env=subprocess_env(MEDRL_LEDGER=str(tmp_path / "cut.jsonl")), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while latest_checkpoint(checkpoints) is None and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    assert not (tmp_path / "cut").exists()  # nothing half-written where the model goes
    k = step_of(latest_checkpoint(checkpoints))
    assert k is not None and k < 8

    resumed = subprocess.run(
        command("cut", "--resume"), env=subprocess_env(MEDRL_LEDGER=str(tmp_path / "resumed.jsonl")),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected = ledger(tmp_path / "whole.jsonl")
    assert [row["step"] for row in expected] == list(range(8))
    before_kill = [row for row in ledger(tmp_path / "cut.jsonl") if row["step"] < k]
    after = ledger(tmp_path / "resumed.jsonl")
    assert after[0]["step"] == k  # the step count continues from the checkpoint
    assert before_kill + after == expected  # same prompts at every step: none skipped, none repeated

    summary = json.loads((tmp_path / "cut" / "train_summary.json").read_text())
    assert summary["resumed_from"] == k and summary["global_step"] == 8
    logged = [json.loads(line) for line in (tmp_path / "cut" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in logged if "loss" in row] == list(range(1, 9))  # each step logged once

    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "cut" / "model.safetensors")
    assert a.keys() == b.keys()
    assert max((a[key] - b[key]).abs().max().item() for key in a) <= 1e-6
    assert not (tmp_path / "cut.work" / "checkpoints").exists()  # removed once the model is committed


# ------------------------------------------------------------------------------------------ two processes


def test_two_processes_end_with_identical_weights(warm_model, data, tmp_path):
    """`torchrun --nproc_per_node 2 -m medrl train` on CPU (gloo): both ranks train, rank 0 writes the model;
    every rank's weights digest is gathered and compared with the saved model's."""
    from transformers import AutoModelForImageTextToText

    from medrl.train.common import weights_digest

    config = tmp_path / "study.yaml"
    config.write_text(arm_yaml("grpo", lr=1e-3, steps=3, batch=1))
    out = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "medrl", "train", "--config", str(config), "--data", str(data), "--init", str(warm_model),
            "--out", str(tmp_path / "model"),
        ],
        env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "model" / "train_summary.json").read_text())
    assert summary["global_step"] == 3
    digests = summary["weights_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    saved = weights_digest(AutoModelForImageTextToText.from_pretrained(tmp_path / "model"))
    start = weights_digest(AutoModelForImageTextToText.from_pretrained(warm_model))
    assert digests[0] == saved != start
