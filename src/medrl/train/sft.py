"""Supervised fine-tuning through TRL's SFTTrainer on prompt/completion pairs: full, or LoRA adapters (peft).

Prompt/completion form makes TRL's vision collator compute the loss on the completion only. LoRA adapters
are merged into the saved model, so every later stage loads an ordinary checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from medrl.config import StudyConfig
from medrl.models.load import load_model, load_processor
from medrl.train.common import finish, trainer_args, training_callbacks, vision_dataset


def lora_config(cfg: StudyConfig, arm: str):
    from peft import LoraConfig

    lora = cfg.arms[arm].lora
    # Restrict adapters to the language model unless the vision tower is to be trained too.
    targets = lora.target_modules
    if lora.freeze_vision:
        targets = r".*language_model.*\.(" + "|".join(lora.target_modules) + ")$"
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=targets)


def train_sft(cfg: StudyConfig, arm: str, data_dir: Path, init_ref: str, out_dir: Path, work_dir: Path) -> dict:
    from trl import SFTConfig, SFTTrainer

    spec = cfg.arms[arm]
    processor = load_processor(init_ref, cfg.model)
    model = load_model(init_ref, cfg.model)
    args = SFTConfig(
        **trainer_args(spec, work_dir, spec.per_device_batch_size),
        max_length=None,  # never cut image tokens out of a prompt
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=vision_dataset(cfg, data_dir, "train", completions=True),
        processing_class=processor,
        peft_config=lora_config(cfg, arm) if spec.method == "lora" else None,
        callbacks=training_callbacks(work_dir),
    )
    trainer.train()
    if spec.method == "lora":
        trainer.model = trainer.model.merge_and_unload()
    return finish(trainer, out_dir, processor)
