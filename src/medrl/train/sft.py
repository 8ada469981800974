"""Supervised fine-tuning through TRL's SFTTrainer on prompt/completion pairs: full, or LoRA adapters (peft).

Prompt/completion form makes TRL's vision collator compute the loss on the completion only. LoRA adapters
sit on the language model's attention (and on the vision tower's when `lora.freeze_vision` is off); every
other weight is frozen. Adapters are merged into the saved model, so every later stage loads an ordinary
checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from medrl.config import StudyConfig
from medrl.models.load import load_model, load_processor
from medrl.train.common import finish, trainer_args, training_callbacks, vision_dataset

# Module paths of the two towers in Hugging Face's VLM classes (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).
LANGUAGE = r"(.*\.)?language_model\..*"
VISION = r"(.*\.)?visual\.blocks\..*"


def lora_config(cfg: StudyConfig, arm: str):
    from peft import LoraConfig

    lora = cfg.arms[arm].lora
    # A regex, so that a name like `proj` cannot match a module of the other tower by accident.
    targets = [rf"{LANGUAGE}\.({'|'.join(lora.target_modules)})"]
    if not lora.freeze_vision:
        targets.append(rf"{VISION}\.({'|'.join(lora.vision_target_modules)})")
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="^(" + "|".join(targets) + ")$",
    )


def train_sft(
    cfg: StudyConfig,
    arm: str,
    data_dir: Path,
    init_ref: str,
    out_dir: Path,
    work_dir: Path,
    resume_from: Path | None = None,
) -> dict:
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
        callbacks=training_callbacks(work_dir, spec.save_total_limit, resume_from),
    )
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if spec.method == "lora":
        trainer.model = trainer.model.merge_and_unload()
    return finish(trainer, out_dir, processor)
