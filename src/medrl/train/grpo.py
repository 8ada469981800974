"""GRPO and Dr.GRPO through TRL's GRPOTrainer, with the rewards named in the arm's config.

GRPO: advantage (r - mean) / std within each group, per-sequence length normalisation
(`loss_type="grpo"`, `scale_rewards="group"`). Dr.GRPO: advantage r - mean, no std scaling and no
per-response length normalisation (`loss_type="dr_grpo"`, `scale_rewards="none"`). TRL's default loss is
DAPO, so both are set explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medrl.config import GrpoArm, StudyConfig
from medrl.evaluate.generate import model_architecture
from medrl.models.sizes import config_of, geometry
from medrl.rewards import reward_functions
from medrl.train.common import Recipe, vision_dataset
from medrl.train.memory import vllm_need, vllm_utilization
from medrl.train.rollout import RolloutSettings, grpo_rollout_kwargs

LOSS = {
    "grpo": {"loss_type": "grpo", "scale_rewards": "group"},
    "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"},
}


class NoSampleText(logging.Filter):
    """TRL warns with the whole prompt and completion when every reward of a sample is None (e.g. the judge was
    the only reward and could not answer): patient-derived text, so the record is replaced by a count-free note."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "All reward functions returned None" in str(record.msg):
            record.msg, record.args = "every reward of a completion was None (unscorable); text not logged", None
        return True


logging.getLogger("trl.trainer.grpo_trainer").addFilter(NoSampleText())


def derived_vllm_utilization(spec: GrpoArm, init_ref: str, max_pixels: int) -> float:
    """vLLM's default share of this GPU: what the arm's rollouts need over the card's memory (train/memory.py)."""
    import torch

    need = vllm_need(spec, geometry(config_of(init_ref)), max_pixels)
    return vllm_utilization(need, torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)


def recipe(cfg: StudyConfig, arm: str, data_dir: Path, init_ref: str) -> Recipe:
    """GRPO or Dr.GRPO: TRL's GRPOConfig and GRPOTrainer, with the arm's rewards bound to their settings."""
    from trl import GRPOConfig, GRPOTrainer

    spec = cfg.arms[arm]
    assert isinstance(spec, GrpoArm), "train_arm picks this recipe by method"
    rollout = RolloutSettings(
        spec.rollout,
        spec.vllm_gpu_memory_utilization,
        spec.vllm_tensor_parallel_size,
        spec.vllm_sleep_mode,
        spec.vllm_max_prompt_tokens,
    )
    # Resolved here, before the trainer loads a model: rollout=vllm without CUDA or vLLM stops with the fix.
    architecture = model_architecture(init_ref, cfg.model.trust_remote_code)
    rollout_kwargs = grpo_rollout_kwargs(
        rollout,
        spec.max_completion_length,
        cfg.model.max_pixels,
        architecture=architecture,
        derived_utilization=lambda: derived_vllm_utilization(spec, init_ref, cfg.model.max_pixels),
    )
    return Recipe(
        GRPOConfig,
        GRPOTrainer,
        vision_dataset(cfg, data_dir, "train"),
        # TRL counts completions per device; the config counts prompts, each sampled num_generations times.
        spec.per_device_batch_size * spec.num_generations,
        config_kwargs={
            "num_generations": spec.num_generations,
            "max_completion_length": spec.max_completion_length,
            "temperature": spec.temperature,
            "beta": spec.beta,
            "reward_weights": [r.weight for r in spec.rewards],
            "log_completions": False,  # completions are patient-derived text: never in logs
            **LOSS[spec.method],
            **rollout_kwargs,
        },
        trainer_kwargs={"reward_funcs": reward_functions(spec.rewards, cfg.judge)},
    )
