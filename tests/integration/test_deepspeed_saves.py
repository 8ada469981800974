"""Every method's save path under DeepSpeed ZeRO-2 (the shipped config, as the paper preset sets for every arm):
`torchrun -m medrl train` on CPU (gloo), then the committed model reloads with no missing or unexpected keys and
holds exactly the weights the run ended with. Under DeepSpeed the trainer's own save takes the engine's state
dict, which for LoRA still wraps the PeftModel: every key was written as `base_model.model.*` (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.tiny_runs import committed_synthetic

pytestmark = pytest.mark.slow

# A few steps of each method on the tiny model; large enough a learning rate that every trained weight moves.
ARM = """
arms:
  a: {{method: {method}, deepspeed: zero2}}
train:
  learning_rate: 1.0e-2
  max_steps: 2
  per_device_batch_size: 2
  grad_accum: 1
  bf16: {bf16}
  num_generations: 2
  max_completion_length: 8
  save_steps: 100
  seed: 0
  lora: {{r: 4, alpha: 8, dropout: 0.0}}
  rewards: [{{name: "tests.support.varied_reward_run:varied_reward"}}]
"""
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return committed_synthetic(tmp_path_factory.mktemp("ds-data") / "synthetic", train=16, test=4)


@pytest.mark.parametrize("method", ["sft", "lora", "dpo", "grpo"])
def test_a_deepspeed_run_saves_a_model_that_reloads_whole(method, tiny_model, data, tmp_path):
    from transformers import AutoModelForImageTextToText

    from medrl.train.common import weights_digest

    config = tmp_path / "study.yaml"
    config.write_text(ARM.format(method=method, bf16=str(torch.cuda.is_available()).lower()))
    out = tmp_path / "model"
    run = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
            "-m", "tests.support.varied_reward_run", "train", "--config", str(config), "--data", str(data),
            "--init", str(tiny_model), "--out", str(out),
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]

    saved, info = AutoModelForImageTextToText.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # The digest the run took of its final (for LoRA: merged) model in memory, before saving.
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2
    assert weights_digest(saved) == summary["weights_sha256"][0]

    start = AutoModelForImageTextToText.from_pretrained(tiny_model).state_dict()
    changed = {k for k, v in saved.state_dict().items() if not torch.equal(v, start[k])}
    assert changed, "training changed no weight: the saved model is the starting one"
    if method == "lora":
        # The merged adapters: the language model's attention moved and nothing else did.
        assert all(".language_model." in k and k.split(".")[-2] in LORA_TARGETS for k in changed), sorted(changed)
        assert len(changed) == 4 * 2  # four projections in each of the tiny model's two layers


def test_a_deepspeed_arm_trains_in_one_process_without_a_launcher(tiny_model, data, tmp_path):
    """A single-GPU PyTorchJob trains in its pod's own process (no torchrun): the operator sets RANK, WORLD_SIZE and
    MASTER_* but not LOCAL_RANK, and DeepSpeed then went looking for MPI (deepspeed/comm/comm.py init_distributed)
    and stopped on the missing mpi4py. The same for `medrl train` without torchrun and a single-GPU TrainJob."""
    config = tmp_path / "study.yaml"
    config.write_text(ARM.format(method="sft", bf16="false"))
    out = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")}
    env |= {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "localhost", "MASTER_PORT": "23456"}  # the operator's
    run = subprocess.run(
        [
            sys.executable, "-m", "tests.support.varied_reward_run", "train", "--config", str(config), "--data",
            str(data), "--init", str(tiny_model), "--out", str(out),
        ],
        capture_output=True, text=True, timeout=900, env=env,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 2
