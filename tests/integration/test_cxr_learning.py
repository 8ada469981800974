"""GRPO learns from the grounding reward (real TRL GRPOTrainer on a tiny Qwen3-VL, fixed seeds).

A brief SFT on synthetic pleural effusions (left and right) teaches the box format but leaves the side nearly a
coin flip (measured: the side token at p ~0.5, greedy boxes often on the wrong lung). GRPO on left effusions,
rewarded only by the IoU reward, moves the boxes to the side the reward favours: the mean reward of its
samples rises (first vs last 5 of 24 steps: 0.54 -> 0.75 in the calibration run) and the greedy box F1 with it
(0.39 -> 0.90).
"""

import json
import shutil

import pytest

from medrl.config import load_config
from medrl.data.prep import prepare
from medrl.data.records import iter_jsonl, write_jsonl
from medrl.evaluate import evaluate_model
from medrl.models.tiny import build_tiny
from medrl.train import train_arm

pytestmark = pytest.mark.slow

STUDY = """
model: {base: unused, min_pixels: 4096, max_pixels: 4096}
prompt: ""
data: {source: cxr-synthetic, train_size: 1200, test_size: 160, image_size: 64, cxr_tasks: [grounding], seed: 0}
train: {seed: 0, grad_accum: 1, max_completion_length: 24, logging_steps: 1, save_steps: 1000}
evaluate: {batch_size: 32, max_new_tokens: 24}
arms:
  sft: {method: sft, learning_rate: 1.0e-2, epochs: 4, per_device_batch_size: 16}
  grpo:
    method: grpo
    init: arm:sft
    learning_rate: 5.0e-4
    max_steps: 24
    per_device_batch_size: 4
    num_generations: 8
    temperature: 0.7
    beta: 0.0
    rewards: [{name: grounding_iou}]
"""


def _keep(data_dir, word):
    """Keep only the grounding questions whose phrase holds `word`; returns how many training rows are left."""
    for name in ("train.jsonl", "test.jsonl"):
        write_jsonl(data_dir / name, [r for r in iter_jsonl(data_dir / name) if word in r["meta"]["phrase"]])
    return sum(1 for _ in iter_jsonl(data_dir / "train.jsonl"))


def test_grpo_raises_the_mean_iou_reward(tmp_path):
    cfg = load_config(text=STUDY)
    data = tmp_path / "effusions"
    prepare(cfg.data, data)
    assert _keep(data, "pleural effusion") >= 200
    left = tmp_path / "left-effusions"
    shutil.copytree(data, left)
    assert _keep(left, "left pleural effusion") >= 80

    base = build_tiny("qwen3-vl", tmp_path / "base", seed=0)
    sft = tmp_path / "sft"
    train_arm(cfg, "sft", data, str(base), sft, tmp_path / "work-sft")
    grpo = tmp_path / "grpo"
    train_arm(cfg, "grpo", left, str(sft), grpo, tmp_path / "work-grpo")

    log = [json.loads(line) for line in (tmp_path / "work-grpo" / "train_log.jsonl").read_text().splitlines()]
    rewards = [row["reward"] for row in log if "reward" in row]
    assert len(rewards) == 24
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    _, before = evaluate_model(cfg, str(sft), left)
    _, after = evaluate_model(cfg, str(grpo), left)
    print(f"mean IoU reward of GRPO samples: first 5 steps {first:.3f}, last 5 {last:.3f}; {rewards}")
    print(f"greedy box F1 on held-out left effusions: {before['box_f1']['mean']:.3f} -> {after['box_f1']['mean']:.3f}")
    assert last > first + 0.1
    assert after["box_f1"]["mean"] > before["box_f1"]["mean"]
