"""What every training method shares: datasets in TRL's vision format, arguments, the JSONL log."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medrl.config import ArmConfig, StudyConfig
from medrl.data.prompt import prompt_messages, target_completion
from medrl.data.records import read_records


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def vision_dataset(cfg: StudyConfig, data_dir: Path, split: str = "train", completions: bool = False):
    """Rows with a conversational `prompt`, the `image` (decoded lazily from its file) and the answer columns
    the rewards read; with `completions`, also the SFT target as a conversational `completion`."""
    from datasets import Dataset, Image

    rows: list[dict[str, Any]] = []
    for rec in read_records(data_dir, split):
        row = {
            "id": rec.id,
            "prompt": prompt_messages(rec, cfg.prompt),
            "image": str(Path(data_dir) / rec.images[0]) if rec.images else None,
            "answer": rec.answer,
            "choices": rec.choices,
            "answer_label": rec.answer_label or "",
            # what the report and grounding rewards compare with
            "task": rec.task,
            "boxes": rec.boxes or [],
            "report": rec.report or "",
        }
        if completions:
            row["completion"] = [{"role": "assistant", "content": target_completion(rec, cfg.prompt)}]
        rows.append(row)
    return Dataset.from_list(rows).cast_column("image", Image())


def trainer_args(arm: ArmConfig, work_dir: Path, per_device_batch_size: int) -> dict[str, Any]:
    """Arguments common to TRL's configs (they all extend transformers.TrainingArguments)."""
    args: dict[str, Any] = {
        "output_dir": str(work_dir / "checkpoints"),
        "learning_rate": arm.learning_rate,
        "max_steps": arm.max_steps,
        "num_train_epochs": arm.epochs,
        "per_device_train_batch_size": per_device_batch_size,
        "gradient_accumulation_steps": arm.grad_accum,
        "warmup_steps": arm.warmup_ratio,  # a float below 1 is a ratio of the total steps
        "weight_decay": arm.weight_decay,
        "max_grad_norm": arm.max_grad_norm,
        "seed": arm.seed,
        "data_seed": arm.seed,
        "logging_steps": arm.logging_steps,
        "save_strategy": "steps",
        "save_steps": arm.save_steps,
        "save_total_limit": arm.save_total_limit,
        "bf16": arm.bf16,
        "gradient_checkpointing": arm.gradient_checkpointing,
        "report_to": [],
        "disable_tqdm": False,
        "use_cpu": not has_cuda(),
        "dataloader_num_workers": 0,
    }
    return args


class JsonlLog(TrainerCallback):
    """Appends each of TRL's log records (step, loss, rewards, KL, lengths...) to a JSONL file on rank 0."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step}
        row.update({k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def training_callbacks(work_dir: Path) -> list[TrainerCallback]:
    """Callbacks every trainer gets: the JSONL log, the Prometheus exporter (/metrics when MEDRL_METRICS_PORT is
    set) and, inside `checkpoint_store.upload_to(...)`, the upload of each checkpoint to the store."""
    from medrl.infra import checkpoint_store, metrics
    from medrl.infra.trainer_hooks import CheckpointUpload, PrometheusExporter

    callbacks: list[TrainerCallback] = [
        JsonlLog(work_dir / "train_log.jsonl"),
        PrometheusExporter(metrics.current_arm(), metrics.port_from_env()),
    ]
    target = checkpoint_store.active_target()
    if target is not None:
        callbacks.append(CheckpointUpload(target, work_dir / "checkpoint-uploads"))
    return callbacks


def finish(trainer, out_dir: Path, processor) -> dict:
    """Save the final model (safetensors) and processor; return what the run did."""
    trainer.save_model(str(out_dir))
    processor.save_pretrained(str(out_dir))
    (out_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml says it all
    state = trainer.state
    return {"global_step": state.global_step, "epoch": state.epoch}
