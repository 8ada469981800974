"""The tiny model is an ordinary Hugging Face Qwen2-VL checkpoint that loads offline and generates."""

import json

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, Qwen2VLForConditionalGeneration


def test_loads_offline_with_auto_classes(tiny_model):
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl"
    model = AutoModelForImageTextToText.from_pretrained(tiny_model)
    processor = AutoProcessor.from_pretrained(tiny_model)
    assert isinstance(model, Qwen2VLForConditionalGeneration)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert (tiny_model / "model.safetensors").is_file()
    assert not list(tiny_model.glob("*.bin"))  # safetensors only, no pickles

    tok = processor.tokenizer
    for special in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"):
        assert tok.convert_tokens_to_ids(special) != tok.unk_token_id
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the lesion?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>Where is the lesion?" in text
    assert text.endswith("<|im_start|>assistant\n")

    inputs = processor(text=[text], images=[Image.new("RGB", (56, 56))], return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4  # 56x56 -> 2x2 merged patches
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5 or tok.eos_token_id in out[0].tolist()


def test_tiny_model_is_deterministic(tiny_model, tmp_path):
    from medrl.models.tiny import build_tiny

    again = build_tiny("qwen2-vl", tmp_path / "again", seed=0)
    assert (again / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    assert (again / "tokenizer.json").read_text() == (tiny_model / "tokenizer.json").read_text()
