"""Full-size model geometries, as published in the models' config.json files, so that memory plans and the GPU
check can build a model of the real size from its configuration alone (random weights, no hub).

`parameter_counts` instantiates the model on PyTorch's meta device: exact counts, no memory, no download.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from medrl.models.load import local_dir


class PublishedConfig(TypedDict):
    """The keywords of a model's configuration class, as its config.json gives them."""

    text_config: dict[str, object]
    vision_config: dict[str, object]
    tie_word_embeddings: bool


# Qwen/Qwen2-VL-2B-Instruct (and Qwen2-VL-2B, the same geometry): the study's base model.
QWEN2_VL_2B: PublishedConfig = {
    "text_config": {
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "max_position_embeddings": 32768,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "rope_theta": 1000000.0,
    },
    "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16, "mlp_ratio": 4},
    "tie_word_embeddings": True,
}

# Qwen/Qwen3-VL-8B-Instruct: the base model of the chest X-ray preset (radvlm), 8.77 B parameters.
QWEN3_VL_8B: PublishedConfig = {
    "text_config": {
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 262144,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "rope_theta": 5000000.0,
    },
    "vision_config": {
        "depth": 27,
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_heads": 16,
        "patch_size": 16,
        "out_hidden_size": 4096,
        "deepstack_visual_indexes": [8, 16, 24],
    },
    "tie_word_embeddings": False,
}

KNOWN: dict[str, PublishedConfig] = {"Qwen/Qwen2-VL-2B-Instruct": QWEN2_VL_2B, "Qwen/Qwen2-VL-2B": QWEN2_VL_2B}
KNOWN_QWEN3_VL: dict[str, PublishedConfig] = {"Qwen/Qwen3-VL-8B-Instruct": QWEN3_VL_8B}


@dataclass(frozen=True)
class Geometry:
    """What a memory estimate needs of a model."""

    parameters: int
    vision_parameters: int
    hidden_size: int
    intermediate_size: int
    kv_width: int  # keys (and values) per token: KV heads x head size
    layers: int
    vocab_size: int
    vision_layers: int
    vision_width: int


def qwen2_vl_2b_config():
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(**QWEN2_VL_2B)


def config_of(ref: str):
    """The configuration of `ref`: a known hub id without the hub, else the model's own config.json (a local
    directory, or a hub id in the local cache)."""
    if ref in KNOWN:
        from transformers import Qwen2VLConfig

        return Qwen2VLConfig(**KNOWN[ref])
    if ref in KNOWN_QWEN3_VL:
        from transformers import Qwen3VLConfig

        return Qwen3VLConfig(**KNOWN_QWEN3_VL[ref])
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(local_dir(ref))


def geometry(config) -> Geometry:
    """Parameter counts of the model `config` describes, built on the meta device."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(
        p.numel() for name, p in model.named_parameters() if ".visual." in f".{name}" or "vision_tower" in name
    )
    text = config.get_text_config()
    head = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    seen = getattr(config, "vision_config", None)
    # An absent name reads 0 (not None): as falsy, and of the fallback's type
    vision_layers = getattr(seen, "depth", 0) or getattr(seen, "num_hidden_layers", 0)
    vision_width = getattr(seen, "embed_dim", 0) or getattr(seen, "hidden_size", 0)
    kv_width = (getattr(text, "num_key_value_heads", None) or text.num_attention_heads) * head
    return Geometry(
        total, vision, text.hidden_size, text.intermediate_size, kv_width, text.num_hidden_layers, text.vocab_size,
        vision_layers, vision_width,
    )  # fmt: skip
