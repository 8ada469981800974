"""Training: one skeleton, `train_arm`, that every method fills in. The method's module (sft.py for full and LoRA
SFT, dpo.py, grpo.py for GRPO and Dr.GRPO) says which TRL config and trainer it uses and with what, as a `Recipe`;
loading the model, the callbacks, resuming and saving are the skeleton's."""

from __future__ import annotations

import importlib
from pathlib import Path

from medrl.config import ConfigError, StudyConfig, Training
from medrl.models.load import load_model, load_processor
from medrl.store.checkpoints import Target
from medrl.train import common
from medrl.train.rollout import EngineStartError

METHODS = {"sft": "sft", "lora": "sft", "dpo": "dpo", "grpo": "grpo", "dr_grpo": "grpo"}  # method -> its module


def train_arm(
    cfg: StudyConfig,
    arm: str,
    data_dir: Path,
    init_ref: str,
    out_dir: Path,
    work_dir: Path,
    resume_from: Path | None = None,
    upload: Target | None = None,
    callbacks: list | None = None,
) -> dict:
    """Train `arm` from the model `init_ref` on the prepared dataset `data_dir`.

    Writes the final model (safetensors + processor) into `out_dir`, checkpoints under `work_dir/checkpoints` (each
    also committed to the store with `upload`) and TRL's log history to `work_dir/train_log.jsonl`; continues from
    the checkpoint `resume_from` if given; `callbacks` join the trainer's own. Returns a summary (steps, epoch, each
    rank's weights digest).
    """
    cfg = cfg.for_arm(arm)  # the arm's own instruction (e.g. thinking) in prompts and SFT targets
    spec = cfg.arms[arm]
    if not isinstance(spec, Training):
        raise ConfigError(
            f"arms.{arm}.method={spec.method}: nothing to train (method 'none' evaluates the model as is)"
        )
    if resume_from is not None and spec.deepspeed and not any(Path(resume_from).glob("global_step*")):
        raise ConfigError(
            f"arms.{arm}: checkpoint {Path(resume_from).name} holds the weights only (save_only_model), which "
            "DeepSpeed cannot resume from; train from the start with a new --out, or set save_only_model: false"
        )
    recipe = importlib.import_module(f"medrl.train.{METHODS[spec.method]}").recipe(cfg, arm, data_dir, init_ref)
    common.check_train_rows(arm, spec, len(recipe.dataset), data_dir)  # before a model is loaded
    processor = load_processor(init_ref, cfg.model)
    model = load_model(init_ref, cfg.model)
    if spec.deepspeed:
        common.one_rank_env()  # before the arguments: they set up the distributed state DeepSpeed starts from
    args = recipe.config(**common.trainer_args(spec, work_dir, recipe.per_device_batch_size), **recipe.config_kwargs)
    try:
        # With use_vllm, TRL starts the colocated vLLM engine inside the trainer's constructor.
        trainer = recipe.trainer(
            model=model,
            args=args,
            train_dataset=recipe.dataset,
            processing_class=processor,
            callbacks=common.training_callbacks(
                arm, work_dir, spec.save_total_limit, resume_from, upload, spec.max_nonfinite_steps, callbacks
            ),
            **recipe.trainer_kwargs,
        )
    except Exception as err:
        if not recipe.config_kwargs.get("use_vllm"):
            raise
        raise EngineStartError(
            f"arms.{arm}: the colocated vLLM engine did not start ({type(err).__name__}: {str(err)[:300]}); fix the "
            f"cause, lower arms.{arm}.vllm_gpu_memory_utilization if it ran out of memory, or set arms.{arm}.rollout=hf"
        ) from err
    if common.zero3(trainer) and spec.method == "lora":
        raise ConfigError(
            f"arms.{arm}: LoRA under DeepSpeed ZeRO-3 ({spec.deepspeed}) is not supported: the adapters cannot be "
            "merged into sharded weights; use deepspeed: zero2"
        )
    try:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except RuntimeError as err:
        # torch.multinomial's words when the logits overflow while sampling (weights finite but too large, fp16).
        if "probability tensor contains" not in str(err):
            raise
        raise common.NonFiniteError(
            f"arm {arm}: sampling at step {trainer.state.global_step + 1} met non-finite next-token probabilities "
            "(the model's logits overflow); training stopped and nothing is committed. Check the --init model, "
            "lower learning_rate, or use float32 or bfloat16 rather than float16"
        ) from None
    return common.finish(trainer, out_dir, processor)
