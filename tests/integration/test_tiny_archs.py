"""Qwen2.5-VL, Qwen3-VL and LLaVA-1.5 tiny checkpoints load through the same path as Qwen2-VL (AutoProcessor,
AutoModelForImageTextToText, our `models.load`), see images and generate; `medrl tiny-model --arch` builds them;
a LLaVA comparison arm is evaluated zero-shot like any other."""

import json

import pytest
import torch
from PIL import Image
from transformers import (
    LlavaForConditionalGeneration,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLForConditionalGeneration,
)

from medrl.config import DataConfig, ModelConfig, load_config
from medrl.data.prep import prepare
from medrl.evaluate import evaluate_model
from medrl.models.load import load_model, load_processor
from medrl.models.tiny import build_tiny
from tests.support.cli import medrl_here

# (arch, model_type, class, image side, image tokens per image: Qwen's 2x2 merged patches, CLIP's 4x4 patches)
ARCHS = [
    ("qwen2.5-vl", "qwen2_5_vl", Qwen2_5_VLForConditionalGeneration, 56, 4),
    ("qwen3-vl", "qwen3_vl", Qwen3VLForConditionalGeneration, 64, 4),
    ("llava", "llava", LlavaForConditionalGeneration, 56, 16),
]


@pytest.mark.parametrize(("arch", "model_type", "model_class", "side", "tokens"), ARCHS)
def test_tiny_arch_loads_and_generates(tmp_path, arch, model_type, model_class, side, tokens):
    out = build_tiny(arch, tmp_path / arch)
    assert json.loads((out / "config.json").read_text())["model_type"] == model_type
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    cfg = ModelConfig(min_pixels=side * side, max_pixels=side * side)
    model, processor = load_model(str(out), cfg), load_processor(str(out), cfg)
    assert isinstance(model, model_class)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the lesion?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    images = [Image.new("RGB", (side, side)), Image.new("RGB", (side, side), "white")]
    inputs = processor(text=[text, text], images=images, padding=True, return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 2 * tokens
    with torch.inference_mode():
        logits = model(**inputs).logits[:, -1]
        out_ids = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert not torch.allclose(logits[0], logits[1])  # the image reaches the language model
    assert out_ids.shape[0] == 2


def test_tiny_model_cli_builds_qwen3_vl(tmp_path):
    out = tmp_path / "q3"
    done = medrl_here("tiny-model", "--arch", "qwen3-vl", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen3_vl"
    bad = medrl_here("tiny-model", "--arch", "idefics3", "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "qwen3-vl" in bad.stderr and "llava" in bad.stderr


def test_a_comparison_model_of_another_family_is_evaluated_zero_shot(tmp_path):
    """The paper's "Other Models" rows (LLaVA-1.5, Llama-3.2-Vision): `method: none` arms with their own `model`
    and attention kernel, generated and scored by the same code as the Qwen arms."""
    llava = build_tiny("llava", tmp_path / "llava")
    data = tmp_path / "data"
    prepare(DataConfig(source="synthetic", train_size=8, test_size=6, seed=0), data)
    cfg = load_config(
        text=f"""
evaluate: {{batch_size: 3, max_new_tokens: 6, similarity_model: null}}
arms:
  llava: {{method: none, model: {llava}, label: LLaVA-7B-v1.5, attn_implementation: eager}}
"""
    )
    arm_cfg = cfg.for_arm("llava")
    assert arm_cfg.model.attn_implementation == "eager" and cfg.model.attn_implementation is None
    rows, metrics = evaluate_model(arm_cfg, str(llava), data)
    assert len(rows) == 6 and all(isinstance(r["completion"], str) for r in rows)
    assert metrics["accuracy"]["n"] == 6 and metrics["accuracy"]["status"] == "ok"
