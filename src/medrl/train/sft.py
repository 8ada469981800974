"""Supervised fine-tuning through TRL's SFTTrainer on prompt/completion pairs: full, or LoRA adapters (peft).

Prompt/completion form makes TRL's vision collator compute the loss on the completion only. LoRA adapters
sit on the language model's attention (and on the vision tower's when `lora.freeze_vision` is off); every
other weight is frozen. The skeleton merges adapters into the saved model (medrl.train.common.finish).
"""

from __future__ import annotations

from pathlib import Path

from medrl.config import LoraArm, SftArm, StudyConfig
from medrl.train.common import Recipe, vision_dataset

# Module paths of the two towers in Hugging Face's VLM classes (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).
LANGUAGE = r"(.*\.)?language_model\..*"
VISION = r"(.*\.)?visual\.blocks\..*"


def lora_config(cfg: StudyConfig, arm: str):
    from peft import LoraConfig

    spec = cfg.arms[arm]
    assert isinstance(spec, LoraArm), "sft.recipe asks for adapters of a lora arm only"
    lora = spec.lora
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


def recipe(cfg: StudyConfig, arm: str, data_dir: Path, init_ref: str) -> Recipe:
    """Full SFT, or LoRA with `method: lora`: TRL's SFTConfig and SFTTrainer with this method's arguments."""
    from trl import SFTConfig, SFTTrainer

    spec = cfg.arms[arm]
    assert isinstance(spec, SftArm | LoraArm), "train_arm picks this recipe by method"
    return Recipe(
        SFTConfig,
        SFTTrainer,
        vision_dataset(cfg, data_dir, "train", completions=True),
        spec.per_device_batch_size,
        config_kwargs={"max_length": None, "completion_only_loss": True},  # never cut image tokens out of a prompt
        trainer_kwargs={"peft_config": lora_config(cfg, arm) if spec.method == "lora" else None},
    )
