"""A tiny GRPO study (a few CPU seconds) and a dataset whose questions, image paths and patient fields carry
marker strings, for the store and metrics tests."""

from __future__ import annotations

import json
import logging
import shutil
import traceback
from pathlib import Path

from medrl.config import DataConfig
from medrl.data.prep import prepare
from medrl.data.records import Record, iter_jsonl, write_jsonl

QUESTION_MARK = "QCANARYxq7f3a"
PATH_MARK = "PCANARYzz91bd"
PATIENT_MARK = "PATIENTCANARYjd4412"
MARKERS = (QUESTION_MARK, PATH_MARK, PATIENT_MARK)


def grpo_study(max_steps: int = 6, save_steps: int = 2, keep: int = 2) -> str:
    """A one-arm GRPO study from the tiny model; checkpoints every `save_steps`, the newest `keep` kept."""
    return f"""
name: tiny-grpo
experiment: tiny-grpo
model: {{base: "tiny:qwen2-vl", min_pixels: 3136, max_pixels: 3136}}
data: {{source: synthetic, train_size: 32, test_size: 8, seed: 0}}
train: {{seed: 0, per_device_batch_size: 2, grad_accum: 1, max_completion_length: 16, logging_steps: 1,
        save_steps: {save_steps}, save_total_limit: {keep}}}
evaluate: {{batch_size: 8, max_new_tokens: 16}}
arms:
  grpo: {{method: grpo, learning_rate: 5.0e-5, max_steps: {max_steps}, num_generations: 4, beta: 0.04}}
"""


def canary_dataset(out: Path, train: int = 32, test: int = 8) -> Path:
    """A prepared dataset (synthetic images) whose every question, image path and patient field holds a marker."""
    raw = out.parent / f"{out.name}-raw"
    prepare(DataConfig(source="synthetic", train_size=train, test_size=test, seed=0), raw)
    (out / "images").mkdir(parents=True)
    for split in ("train", "test"):
        rows = []
        for i, row in enumerate(iter_jsonl(raw / f"{split}.jsonl")):
            rec = Record.model_validate(row)
            rel = f"images/{PATH_MARK}-{PATIENT_MARK}-{split}-{i}.png"
            shutil.copyfile(raw / rec.images[0], out / rel)
            rec.image = rel
            rec.question = f"{QUESTION_MARK} patient {PATIENT_MARK}: {rec.question}"
            rec.meta = {**rec.meta, "patient": PATIENT_MARK}
            rows.append(rec)
        write_jsonl(out / f"{split}.jsonl", rows)
    for name in ("quarantine.jsonl", "summary.json"):
        shutil.copyfile(raw / name, out / name)
    assert QUESTION_MARK in (out / "train.jsonl").read_text() and json.loads((out / "summary.json").read_text())
    shutil.rmtree(raw)
    return out


def small_sft_run(root: Path, run_id: str) -> str:
    """An initialised and prepared demo run with one small SFT arm (the launcher tests train it in a job)."""
    from medrl.study import init_run, prep

    overrides = ["data.train_size=32", "data.test_size=8", "arms.sft.epochs=1", "arms.sft.per_device_batch_size=8"]
    uri = init_run(preset="demo", overrides=overrides, store_uri=str(root), run_id=run_id, arms=["sft"])
    prep(uri)
    return uri


class Capture(logging.Handler):
    """Every log record's text (and traceback), to search for what must never be logged."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())
        if record.exc_info:
            self.lines.append("".join(traceback.format_exception(*record.exc_info)))


def committed_synthetic(out: Path, train: int, test: int) -> Path:
    """A prepared synthetic dataset committed at `out` (`medrl train` and `medrl evaluate` take committed data)."""
    from medrl import store

    with store.commit_dir(store.normalize(str(out))) as staging:
        prepare(DataConfig(source="synthetic", train_size=train, test_size=test, seed=0), staging)
    return out
