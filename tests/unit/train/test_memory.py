"""Per-GPU memory plans from an arm's settings and the model's real geometry (built on the meta device)."""

from __future__ import annotations

import pytest

from medrl.config import load_config
from medrl.models.sizes import config_of, geometry
from medrl.train.memory import GIB, estimate, plan_study


@pytest.fixture(scope="module")
def qwen2_vl_2b():
    return geometry(config_of("Qwen/Qwen2-VL-2B-Instruct"))


def test_the_2b_geometry_has_the_published_parameter_count(qwen2_vl_2b):
    assert qwen2_vl_2b.parameters == pytest.approx(2.21e9, rel=0.01)  # Qwen2-VL-2B: 2.21 B parameters
    assert 0.6e9 < qwen2_vl_2b.vision_parameters < 0.7e9  # its ViT: about 675 M
    assert (qwen2_vl_2b.layers, qwen2_vl_2b.hidden_size, qwen2_vl_2b.kv_width) == (28, 1536, 256)


def test_every_trained_arm_of_the_paper_preset_fits_an_a100_80gb(qwen2_vl_2b):
    plans = plan_study(load_config(preset="paper-table1"), gpus=4, gpu_gib=80)
    assert plans and all(not isinstance(p, str) for p in plans), plans
    for plan in plans:
        assert plan.total < 0.6 * 80 * GIB, plan.line()  # headroom: the estimate leaves out spikes (observed <= 26.4)


def test_grpo_without_gradient_checkpointing_is_over_the_budget(qwen2_vl_2b):
    """Eight 1.2k-token sequences with a trainable ViT, activations kept: the defect the preset had."""
    cfg = load_config(preset="paper-table1", overrides=["arms.grpo.gradient_checkpointing=false"])
    plan = estimate("grpo", cfg.arms["grpo"], qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80)
    with_checkpointing = estimate("grpo", cfg.arms["grpo"].model_copy(update={"gradient_checkpointing": True}),
                                  qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80)  # fmt: skip
    assert plan.total > 70 * GIB and with_checkpointing.total < plan.total / 2


def test_zero2_splits_optimizer_state_and_lora_trains_a_sliver(qwen2_vl_2b):
    cfg = load_config(preset="paper-table1")
    one = estimate("sft", cfg.arms["sft-full"], qwen2_vl_2b, cfg.model.max_pixels, gpus=1, gpu_gib=80)
    four = estimate("sft", cfg.arms["sft-full"], qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80)
    assert four.parts["optimizer"] == pytest.approx(one.parts["optimizer"] / 4)
    assert one.parts["optimizer"] == pytest.approx(12 * qwen2_vl_2b.parameters)
    lora = estimate("lora", cfg.arms["sft-lora"], qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80)
    assert lora.parts["optimizer"] < one.parts["optimizer"] / 100 and lora.parts["reference"] == 0


def test_an_arm_whose_model_is_not_here_is_named(tmp_path):
    cfg = load_config(preset="paper-table1", overrides=[f"model.base={tmp_path / 'absent'}"], arms=["sft-full"])
    (line,) = plan_study(cfg, gpus=4, gpu_gib=80)
    assert isinstance(line, str) and line.startswith("sft-full: no config.json")


def test_colocated_vllm_reservation_counts_and_its_default_follows_from_the_kv_cache(qwen2_vl_2b):
    from medrl.train.memory import kv_bytes_per_token, vllm_need

    cfg = load_config(preset="paper-table1", overrides=["arms.grpo.rollout=vllm"])
    spec = cfg.arms["grpo"]
    assert kv_bytes_per_token(qwen2_vl_2b) == 2 * 28 * 256 * 2  # 28,672 B: K and V, 28 layers, 2 KV heads x 128
    need = vllm_need(spec, qwen2_vl_2b, cfg.model.max_pixels)
    # weights 4.4 GB + 2 x (8 rollouts x 1,724 tokens x 28,672 B) + 2 GiB
    assert need == pytest.approx(2 * qwen2_vl_2b.parameters + 2 * 8 * 1724 * 28_672 + 2 * GIB)
    with_vllm = estimate("grpo", spec, qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80, vllm=True)
    without = estimate("grpo", spec, qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80)
    assert with_vllm.vllm == pytest.approx(0.10 * 80 * GIB)  # need 6.9 GiB of 80: rounded up to 0.10
    assert with_vllm.total == pytest.approx(without.total + with_vllm.vllm) and with_vllm.fits
    assert "vLLM reservation 8.0 (needs 6.9)" in with_vllm.line()


def test_a_vllm_share_below_the_rollouts_need_does_not_fit(qwen2_vl_2b):
    cfg = load_config(
        preset="paper-table1", overrides=["arms.grpo.rollout=vllm", "arms.grpo.vllm_gpu_memory_utilization=0.05"]
    )
    plan = estimate("grpo", cfg.arms["grpo"], qwen2_vl_2b, cfg.model.max_pixels, gpus=4, gpu_gib=80, vllm=True)
    assert not plan.fits
    assert "arms.grpo.vllm_gpu_memory_utilization=0.05 gives vLLM 4.0 GiB, below the 6.9 GiB" in plan.line()
    assert "raise it to 0.1 or unset it" in plan.line()


def test_the_plan_counts_vllm_only_where_the_arm_takes_it():
    """The paper's Qwen2-VL rolls out with hf under TRL 1.16 (medrl.train.rollout); rollout=vllm forces it."""
    plans = {p.arm: p for p in plan_study(load_config(preset="paper-table1"), gpus=4, gpu_gib=80)}
    assert plans["grpo"].vllm == 0 and plans["sft-full"].vllm == 0
    forced = load_config(preset="paper-table1", overrides=["arms.grpo.rollout=vllm"])
    assert {p.arm: p for p in plan_study(forced, gpus=4, gpu_gib=80)}["grpo"].vllm == pytest.approx(8 * GIB)


def test_the_radvlm_preset_fits_8_gpus_of_80gb_per_arm_only_with_zero2():
    qwen3_vl_8b = geometry(config_of("Qwen/Qwen3-VL-8B-Instruct"))  # the published geometry, no hub
    assert qwen3_vl_8b.parameters == pytest.approx(8.77e9, rel=0.01)  # Qwen3-VL-8B: 8.77 B parameters
    plans = plan_study(load_config(preset="radvlm"), gpus=8, gpu_gib=80)
    assert len(plans) == 7 and all(not isinstance(p, str) and p.fits for p in plans), plans
    # Without ZeRO every GPU holds the whole Adam state of 8.8 B parameters (~98 GiB): no arm fits at any count.
    bare = plan_study(load_config(preset="radvlm", overrides=["train.deepspeed=null"]), gpus=8, gpu_gib=80)
    assert all(not isinstance(p, str) and not p.fits for p in bare), bare
