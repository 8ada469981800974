"""Training: one module per method. `train_arm` picks the module from the arm's `method`."""

from __future__ import annotations

from pathlib import Path

from medrl.config import StudyConfig


def train_arm(
    cfg: StudyConfig,
    arm: str,
    data_dir: Path,
    init_ref: str,
    out_dir: Path,
    work_dir: Path,
    resume_from: Path | None = None,
) -> dict:
    """Train `arm` from the model `init_ref` on the prepared dataset `data_dir`.

    Writes the final model (safetensors + processor) into `out_dir`, checkpoints under `work_dir/checkpoints`
    and TRL's log history to `work_dir/train_log.jsonl`; continues from the checkpoint `resume_from` if given.
    Returns a summary (steps, epoch, each rank's weights digest).
    """
    cfg = cfg.for_arm(arm)  # the arm's own instruction (e.g. thinking) in prompts and SFT targets
    method = cfg.arms[arm].method
    if method in ("sft", "lora"):
        from medrl.train.sft import train_sft as run
    elif method == "dpo":
        from medrl.train.dpo import train_dpo as run
    elif method in ("grpo", "dr_grpo"):
        from medrl.train.grpo import train_grpo as run
    else:
        raise ValueError(f"arms.{arm}.method={method}: nothing to train (method 'none' evaluates the model as is)")
    return run(cfg, arm, data_dir, init_ref, out_dir, work_dir, resume_from)
