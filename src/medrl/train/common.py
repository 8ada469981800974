"""What every training method shares: datasets in TRL's vision format, arguments, callbacks, the JSONL log and the
end of a run (the final model and each rank's weights digest)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from medrl.config import ConfigError, StudyConfig, Training
from medrl.data.prompt import prompt_messages, target_completion
from medrl.data.records import read_records
from medrl.infra.checkpoint_store import CheckpointCommit, CheckpointUpload, ResumeWeights, Target


@dataclass
class Recipe:
    """What a method fills into the training skeleton (medrl.train.train_arm): TRL's config and trainer classes,
    the dataset, and the method's own keyword arguments of each."""

    config: type  # a TRL config, e.g. trl.GRPOConfig (they all extend transformers.TrainingArguments)
    trainer: type  # its trainer, e.g. trl.GRPOTrainer
    dataset: Any
    per_device_batch_size: int  # TRL's per_device_train_batch_size
    config_kwargs: dict[str, Any] = field(default_factory=dict)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)


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


def trainer_args(arm: Training, work_dir: Path, per_device_batch_size: int) -> dict[str, Any]:
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
        "save_total_limit": None,  # CheckpointCommit rotates, after the new checkpoint is committed
        "bf16": arm.bf16,
        "gradient_checkpointing": arm.gradient_checkpointing,
        "report_to": [],
        "disable_tqdm": False,
        "use_cpu": not has_cuda(),
        "dataloader_num_workers": 0,
    }
    if arm.deepspeed:
        args["deepspeed"] = str(deepspeed_file(arm.deepspeed))
    return args


def config_file(name: str) -> Path:
    """A launcher config shipped in the package: zero2.json (DeepSpeed), accelerate-zero2.yaml (accelerate)."""
    path = Path(str(resources.files("medrl.train") / "configs" / name))
    if not path.is_file():
        raise FileNotFoundError(f"{name} is not shipped in medrl/train/configs; reinstall medrl")
    return path


def deepspeed_file(setting: str) -> Path:
    """The DeepSpeed JSON an arm's `deepspeed` names: `zero2` is the shipped ZeRO-2 config."""
    if setting == "zero2":
        return config_file("zero2.json")
    path = Path(setting).expanduser()
    if not path.is_file():
        raise ConfigError(f"deepspeed={setting}: no such file; give zero2 or the path of a DeepSpeed JSON config")
    return path


class JsonlLog(TrainerCallback):
    """Writes each of TRL's log records (step, loss, rewards, KL, lengths...) to a JSONL file on rank 0.

    The file starts as the trainer state's history: empty for a new run; for a resumed one, the rows up to its
    checkpoint as saved in it (trainer_state.json), so the log is whole even where the earlier file is gone.
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def row(step: int, logs: dict) -> dict:
        return {"step": step, **{k: v for k, v in logs.items() if k != "step" and _finite(v)}}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        rows = [self.row(e.get("step", 0), e) for e in state.log_history if e.get("step", 0) <= state.global_step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, self.path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(self.row(state.global_step, logs)) + "\n")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def training_callbacks(
    arm: str, work_dir: Path, keep: int, resume_from: Path | None = None, upload: Target | None = None
) -> list[TrainerCallback]:
    """Callbacks every trainer gets: the JSONL log, local checkpoint commits (the newest `keep` kept), the weights
    of the checkpoint a run resumes from, the Prometheus exporter labelled with `arm` (/metrics when
    MEDRL_METRICS_PORT is set) and, with `upload`, the commit of each checkpoint to the store."""
    from medrl.infra import metrics
    from medrl.infra.trainer_hooks import PrometheusExporter

    callbacks: list[TrainerCallback] = [JsonlLog(work_dir / "train_log.jsonl"), CheckpointCommit(keep)]
    if resume_from is not None:
        callbacks.append(ResumeWeights(resume_from))
    callbacks.append(PrometheusExporter(arm, metrics.port_from_env()))
    if upload is not None:
        callbacks.append(CheckpointUpload(upload, work_dir / "checkpoint-uploads"))
    return callbacks


def weights_digest(model) -> str:
    """sha256 over the names and bytes of a model's parameters: equal digests, equal weights."""
    import torch

    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(param.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_digests(model) -> list[str]:
    """Every rank's weights digest (one entry when not distributed); raises if the ranks disagree."""
    import torch.distributed as dist

    mine = weights_digest(model)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    digests: list[str] = [""] * dist.get_world_size()
    dist.all_gather_object(digests, mine)
    if len(set(digests)) > 1:
        raise RuntimeError(
            f"ranks hold different weights after training ({len(set(digests))} distinct digests): the gradient "
            "all-reduce did not keep them in sync; check the launcher (torchrun/accelerate) and the backend"
        )
    return digests


def finish(trainer, out_dir: Path, processor) -> dict:
    """Save the final model (safetensors) and processor on rank 0; return what the run did, with each rank's
    weights digest (they must agree). LoRA adapters are merged first, so every later stage loads an ordinary
    checkpoint."""
    from peft import PeftModel

    if isinstance(trainer.model, PeftModel):
        trainer.model = trainer.model.merge_and_unload()
    trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(out_dir))
        (out_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; the run's config.yaml says it all
    state = trainer.state
    plugin = trainer.accelerator.state.deepspeed_plugin
    sharded = plugin is not None and plugin.zero_stage == 3  # each rank holds a shard: nothing to compare
    digests = [] if sharded else rank_digests(trainer.accelerator.unwrap_model(trainer.model))
    return {"global_step": state.global_step, "epoch": state.epoch, "weights_sha256": digests}
