"""The chest X-ray study as configuration: the radvlm preset's arms and settings, and what training sees (the
arm's own prompt, thinking SFT targets, the columns the report and grounding rewards read)."""

from medrl.config import DataConfig, load_config
from medrl.data.prep import prepare
from medrl.rewards import REWARDS
from medrl.train.common import vision_dataset

THINK = "<think>"


def test_radvlm_preset_has_the_papers_settings_and_arms():
    cfg = load_config(preset="radvlm")
    assert "Qwen3-VL" in cfg.model.base
    grpo = {name: arm for name, arm in cfg.arms.items() if arm.method == "grpo"}
    assert set(grpo) == {"radvlm-grpo", "radvlm-think-grpo", "general-grpo", "general-think-grpo"}
    for arm in grpo.values():
        assert (arm.num_generations, arm.learning_rate, arm.beta, arm.max_completion_length) == (8, 1e-6, 0.01, 1024)
        assert {"report_label_f1", "report_rouge_l", "grounding_iou"} <= {r.name for r in arm.rewards}
    # domain model (after the large SFT) versus general model (the base Qwen3-VL)
    assert cfg.arms["radvlm-grpo"].init == "arm:radvlm-sft" and cfg.arms["general-grpo"].init == "base"
    # cold-start thinking SFT before the thinking GRPO arms; with and without thinking
    assert cfg.arms["radvlm-think-grpo"].init == "arm:radvlm-think-sft"
    assert cfg.arms["radvlm-think-sft"].init == "arm:radvlm-sft"
    assert cfg.arms["general-think-grpo"].init == "arm:general-think-sft"
    for name in cfg.arms:
        assert (THINK in cfg.for_arm(name).prompt) == ("think" in name)
    # Qwen3-VL's own box scale, so the zero-shot general arm is not scored on a number format it was never taught
    assert cfg.data.box_scale == 1000
    assert cfg.levels() == [
        ["general-zero-shot", "radvlm-sft", "general-grpo", "general-think-sft"],
        ["radvlm-grpo", "radvlm-think-sft", "general-think-grpo"],
        ["radvlm-think-grpo"],
    ]


STUDY = """
prompt: ""
data: {source: cxr-synthetic, train_size: 24, test_size: 4}
arms:
  sft: {method: sft}
  think-sft: {method: sft, prompt: "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."}
"""  # noqa: E501


def test_training_rows_follow_the_arms_prompt_and_carry_reward_columns(tmp_path):
    cfg = load_config(text=STUDY)
    prepare(DataConfig(**cfg.data.model_dump()), tmp_path)
    plain = vision_dataset(cfg.for_arm("sft"), tmp_path, completions=True)
    think = vision_dataset(cfg.for_arm("think-sft"), tmp_path, completions=True)
    assert {"task", "boxes", "report", "prompt", "completion", "image"} <= set(plain.column_names)
    for a, b in zip(plain, think, strict=True):
        assert a["completion"][0]["content"] == a["answer"]  # no thinking: the answer alone
        target = b["completion"][0]["content"]
        assert target.startswith(THINK) and target.endswith(f"<answer>{b['answer']}</answer>")
        assert len(target) > len(a["answer"]) + 40  # a real reasoning trace, not an empty <think></think>
        assert THINK not in a["prompt"][0]["content"] and THINK in b["prompt"][0]["content"]
    # TRL passes these columns to the rewards: the SFT targets score 1 on their own task, None on the other
    columns = {k: think[k] for k in ("task", "boxes", "report")}
    completions = [row["completion"] for row in think]
    grounding = REWARDS["grounding_iou"](completions, **columns)
    report = REWARDS["report_label_f1"](completions, **columns)
    assert {t for t, g in zip(columns["task"], grounding, strict=True) if g is not None} == {"grounding"}
    assert all(g == 1.0 for g in grounding if g is not None)
    assert all(r == 1.0 for r in report if r is not None) and any(r is not None for r in report)


def test_box_scale_reaches_the_sft_targets_and_the_reward_columns(tmp_path):
    old = load_config(text=STUDY)
    assert old.data.box_scale == 1  # a config written before the setting keeps boxes in 0..1
    cfg = load_config(text=STUDY.replace("test_size: 4}", "test_size: 4, box_scale: 1000}"))
    prepare(DataConfig(**cfg.data.model_dump()), tmp_path)
    rows = [r for r in vision_dataset(cfg.for_arm("sft"), tmp_path, completions=True) if r["task"] == "grounding"]
    assert rows and all(r["box_scale"] == 1000 for r in rows)
    for row in rows:
        target = row["completion"][0]["content"]
        assert "between 0 and 1000" in row["prompt"][0]["content"]
        assert float(target.strip("[]").split(",")[2]) > 1  # written in 0..1000, not 0..1
    columns = {k: [r[k] for r in rows] for k in ("task", "boxes", "box_scale")}
    grounding = REWARDS["grounding_iou"]([r["completion"] for r in rows], **columns)
    assert grounding == [1.0] * len(rows)
