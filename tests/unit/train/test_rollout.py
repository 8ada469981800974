"""train.rollout: the GRPOConfig arguments each setting produces (checked against TRL's real GRPOConfig), the
errors before any model is loaded, and the rows GRPO hands TRL reaching its vLLM path as conversational prompts with
their image. No GPU or vLLM here: tests that need them pass `cuda=True` / a vLLM version as stand-ins, and say so."""

from __future__ import annotations

import pytest

from medrl.config import ConfigError, DataConfig, load_config
from medrl.train.rollout import RolloutSettings, grpo_rollout_kwargs, prompt_tokens, trl_vllm_range

PAPER = {"max_completion_length": 700, "max_pixels": 401_408}


def grpo_config(tmp_path, **kwargs):
    from trl import GRPOConfig

    return GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8, **kwargs)


def test_cpu_machine_rolls_out_with_hf_and_refuses_vllm(tmp_path):
    kwargs = grpo_rollout_kwargs(RolloutSettings("auto"), **PAPER)
    assert kwargs == {"use_vllm": False}
    assert grpo_config(tmp_path, **kwargs).use_vllm is False
    with pytest.raises(ConfigError, match=r"train\.rollout=vllm needs a CUDA GPU.*train\.rollout=hf"):
        grpo_rollout_kwargs(RolloutSettings("vllm"), **PAPER)


def test_vllm_setting_is_trl_colocate_mode_with_the_paper_defaults(tmp_path):
    # stand-in: a CUDA machine with the GPU lock's vLLM 0.30.0
    kwargs = grpo_rollout_kwargs(RolloutSettings("vllm"), **PAPER, cuda=True, vllm="0.30.0")
    assert kwargs == {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": 0.3,
        "vllm_max_model_length": 512 + 512 + 700,  # a 401,408-pixel image, the text, the completion
        "vllm_tensor_parallel_size": 1,
        "vllm_enable_sleep_mode": False,
    }
    args = grpo_config(tmp_path, **kwargs)  # every name is a GRPOConfig field, and it keeps the value
    assert {k: getattr(args, k) for k in kwargs} == kwargs
    # auto: vLLM for an architecture TRL's vLLM path reads as training does (not Qwen2-VL under TRL 1.16)
    auto = grpo_rollout_kwargs(
        RolloutSettings("auto"), **PAPER, cuda=True, vllm="0.30.0", architecture="Gemma3ForCausalLM"
    )
    assert auto == kwargs


def test_auto_rolls_out_with_hf_when_the_architecture_is_unknown():
    """model_architecture gives None when config.json cannot be read (a store that did not answer once), and the model
    may still load afterwards: auto must not then pick vLLM, which would roll out a Qwen2-VL with every image expanded
    twice (train/rollout.py's docstring)."""
    # stand-in: a CUDA machine with the GPU lock's vLLM 0.30.0
    assert grpo_rollout_kwargs(RolloutSettings("auto"), **PAPER, cuda=True, vllm="0.30.0", architecture=None) == {
        "use_vllm": False
    }


def test_every_setting_reaches_its_grpo_field(tmp_path):
    settings = RolloutSettings("vllm", gpu_memory_utilization=0.55, tensor_parallel_size=2, sleep_mode=True)
    kwargs = grpo_rollout_kwargs(settings, 256, 200_704, cuda=True, vllm="0.30.0")
    assert kwargs["vllm_max_model_length"] == prompt_tokens(200_704) + 256 == 256 + 512 + 256
    args = grpo_config(tmp_path, **kwargs)
    assert (args.vllm_gpu_memory_utilization, args.vllm_tensor_parallel_size, args.vllm_enable_sleep_mode) == (
        0.55,
        2,
        True,
    )
    explicit = grpo_rollout_kwargs(RolloutSettings("vllm", max_prompt_tokens=2048), 700, 0, cuda=True, vllm="0.30.0")
    assert explicit["vllm_max_model_length"] == 2748


def test_vllm_outside_trls_range_is_refused_or_skipped():
    # stand-in: a CUDA machine with vLLM 0.33.0, which TRL 1.16 refuses at import
    assert not trl_vllm_range().specifier.contains("0.33.0")
    with pytest.raises(ConfigError, match=r"vLLM 0\.33\.0 is installed but TRL .* accepts vllm.*requirements-gpu"):
        grpo_rollout_kwargs(RolloutSettings("vllm"), **PAPER, cuda=True, vllm="0.33.0")
    assert grpo_rollout_kwargs(RolloutSettings("auto"), **PAPER, cuda=True, vllm="0.33.0") == {"use_vllm": False}


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (RolloutSettings("vllm", gpu_memory_utilization=0.0), "gpu_memory_utilization=0.0"),
        (RolloutSettings("vllm", gpu_memory_utilization=1.5), "gpu_memory_utilization=1.5"),
        (RolloutSettings("vllm", tensor_parallel_size=0), "tensor_parallel_size=0"),
        (RolloutSettings("fast"), "train.rollout='fast': unknown"),
    ],
)
def test_bad_settings_are_named(settings, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        grpo_rollout_kwargs(settings, **PAPER, cuda=True, vllm="0.30.0")


def test_grpo_rows_reach_trls_vllm_path_as_conversation_plus_image(tmp_path, tiny_model):
    """The rows of vision_dataset through TRL's own steps up to vLLM (its image merge, then _tokenize_prompts,
    whose ids and images colocate mode passes to vllm.LLM.generate): one image per prompt, its tokens once."""
    from trl import GRPOTrainer
    from trl.data_utils import is_conversational, prepare_multimodal_messages

    from medrl.data.prep import prepare
    from medrl.models.load import load_model, load_processor
    from medrl.train.common import vision_dataset

    cfg = load_config(text="data: {source: synthetic, train_size: 4, test_size: 2}\narms: {g: {method: grpo}}")
    prepare(DataConfig(**cfg.data.model_dump()), tmp_path / "data")
    rows = vision_dataset(cfg, tmp_path / "data", "train")
    processor = load_processor(str(tiny_model), cfg.model)
    trainer = GRPOTrainer(
        model=load_model(str(tiny_model), cfg.model),
        reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=grpo_config(tmp_path / "out", num_generations=2, max_completion_length=4, report_to=[]),
        train_dataset=rows,
        processing_class=processor,
    )
    batch = [rows[i] for i in range(2)]
    assert all(is_conversational(row) and isinstance(row["prompt"][0]["content"], str) for row in batch)
    prompts = [prepare_multimodal_messages(r["prompt"], images=[r["image"]]) for r in batch]  # as TRL does
    prompt_ids, images, _ = trainer._tokenize_prompts(prompts)
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row, ids, imgs in zip(batch, prompt_ids, images, strict=True):
        assert imgs == [row["image"]]
        grid = processor.image_processor(images=[row["image"]], return_tensors="pt")["image_grid_thw"]
        assert list(ids).count(image_token) == int(grid.prod()) // processor.image_processor.merge_size**2
