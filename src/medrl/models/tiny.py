"""`medrl tiny-model`: a Qwen2-VL, Qwen2.5-VL or Qwen3-VL checkpoint small enough to train on a laptop CPU, and a
LLaVA-1.5 one for the zero-shot comparison rows (another family through the same evaluation path).

The tokenizer is a byte-level BPE trained here on a small built-in corpus, with Qwen's special tokens and a
Qwen-style chat template (images as <|vision_start|><|image_pad|><|vision_end|>; LLaVA: `USER: <image>\n...`).
The result is an ordinary Hugging Face directory: AutoProcessor and AutoModelForImageTextToText load it offline.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal, TypedDict

from medrl.models.load import ModelError

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# Newlines come only from string literals; every tag trims the template's own whitespace.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# LLaVA-1.5's conversation format: "USER: <image>\n{question} ASSISTANT: {answer}</s>".
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ 'USER: ' if message['role'] == 'user' else 'ASSISTANT: ' if message['role'] == 'assistant' else '' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{ '<|im_end|>' if message['role'] == 'assistant' else ' ' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# Words the demo and tests use, so that they tokenize into few pieces; anything else still encodes byte-wise.
CORPUS = [
    "You are a helpful assistant.",
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
    "Choose between the following options: A: B: C: D:",
    "<think>The bright round lesion lies in the upper left part of the CT image.</think>",
    "<answer>upper right</answer> <answer>lower left</answer> <answer>lower right</answer>",
    "Where is the lesion located in this MRI image? In which region of the X-ray scan is the bright lesion?",
    "Which part of this CT image shows the abnormality? yes no normal abnormal",
    "How many lesions are visible in this CT image? How many bright lesions does the MRI scan show?",
    "Count the lesions in this X-ray image. <think>The MRI image shows two round lesions.</think>",
    "<answer>one</answer> <answer>two</answer> <answer>three</answer> <answer>four</answer>",
    "The findings show no pleural effusion. Possible consolidation in the left lower lobe. Cardiomegaly.",
    "No acute cardiopulmonary process. Pneumothorax atelectasis edema fracture opacity nodule mass lesion",
    "[0.12, 0.34, 0.56, 0.78] <|box_start|> <|box_end|> heart lung liver brain kidney chest",
    "system user assistant",
]


# M-RoPE gives the width axis of an image the lowest rotary frequencies; with Qwen's theta (1e6) and a tiny
# head, image columns are almost indistinguishable and a tiny model cannot tell left from right (measured:
# theta 10 -> 0.56 held-out accuracy on the synthetic task, theta 1 -> 1.0). Theta 1 rotates every
# frequency by one radian per position, which keeps neighbouring image positions apart. Qwen3-VL interleaves
# the axes over all frequencies instead of giving width the lowest ones; theta 1 is kept there too, so that
# the three tiny architectures differ only in what their real checkpoints differ in (not measured separately).
ROPE_THETA = 1.0


def mrope(head_dim: int) -> list[int]:
    """Sizes of the (time, height, width) rotary sections for a head size.

    >>> mrope(16)
    [2, 3, 3]
    """
    half = head_dim // 2
    return [half - 2 * (half * 3 // 8), half * 3 // 8, half * 3 // 8]


def build_tokenizer(vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=QWEN_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
        model_max_length=4096,
    )


def mrope_interleaved(head_dim: int) -> list[int]:
    """Qwen3-VL's interleaved M-RoPE sections: height and width take every third frequency from index 1 and 2,
    up to 3 * section; time keeps the rest. Sections sized so that neither runs past head_dim / 2.

    >>> mrope_interleaved(16)
    [3, 3, 2]
    """
    half = head_dim // 2
    h, w = (half - 1 + 2) // 3, (half - 2 + 2) // 3
    return [half - h - w, h, w]


def _special_ids(tokenizer) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}


def _text_config(tokenizer, hidden: int, layers: int, sections: list[int]) -> dict:
    ids = _special_ids(tokenizer)
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": sections},
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


class VisionTokenIds(TypedDict):
    """The special tokens a Qwen-VL config names by id (keywords of its constructor)."""

    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int


def _vision_token_ids(tokenizer) -> VisionTokenIds:
    ids = _special_ids(tokenizer)
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }


def _small_vision(hidden: int, patch_size: int) -> dict:
    """The vision tower of Qwen2.5-VL and Qwen3-VL at its smallest: two blocks of width 32, merged 2x2 into the
    language model's width."""
    return {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
            "patch_size": patch_size, "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip


def _qwen_processor(processor_cls, video_processor_cls, tokenizer, image_pixels: int, **image_processor):
    """A Qwen-VL processor that resizes every image to `image_pixels`, so each gives the same small patch grid."""
    from transformers import Qwen2VLImageProcessor

    return processor_cls(
        image_processor=Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels, **image_processor),
        tokenizer=tokenizer,
        video_processor=video_processor_cls(),
        chat_template=CHAT_TEMPLATE,
    )


def _qwen2_vl(tokenizer, hidden: int, layers: int, image_pixels: int):
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    config = Qwen2VLConfig(
        # The three M-RoPE sections (time, height, width) sum to head_dim / 2.
        text_config=_text_config(tokenizer, hidden, layers, mrope(hidden // 4)),
        vision_config={
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": hidden,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **_vision_token_ids(tokenizer),
    )
    processor = _qwen_processor(Qwen2VLProcessor, Qwen2VLVideoProcessor, tokenizer, image_pixels)
    return Qwen2VLForConditionalGeneration, config, processor


def _qwen2_5_vl(tokenizer, hidden: int, layers: int, image_pixels: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    config = Qwen2_5_VLConfig(
        text_config=_text_config(tokenizer, hidden, layers, mrope(hidden // 4)),
        vision_config={
            **_small_vision(hidden, patch_size=14),
            "window_size": 56,  # pixels: a 2x2 window of merged patches
            "fullatt_block_indexes": [1],  # block 0 attends within windows, block 1 over the whole image
        },
        **_vision_token_ids(tokenizer),
    )
    processor = _qwen_processor(Qwen2_5_VLProcessor, Qwen2VLVideoProcessor, tokenizer, image_pixels)
    return Qwen2_5_VLForConditionalGeneration, config, processor


def _qwen3_vl(tokenizer, hidden: int, layers: int, image_pixels: int):
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    text = _text_config(tokenizer, hidden, layers, mrope_interleaved(hidden // 4))
    text["head_dim"] = hidden // 4  # Qwen3's config does not derive it (default 128)
    config = Qwen3VLConfig(
        text_config=text,
        vision_config={
            **_small_vision(hidden, patch_size=16),  # Qwen3-VL's patches are 16 pixels: 32-pixel merged units
            "num_position_embeddings": 64,  # a learned 8x8 grid, resampled to each image
            "deepstack_visual_indexes": [0],
        },
        **_vision_token_ids(tokenizer),
    )
    processor = _qwen_processor(Qwen3VLProcessor, Qwen3VLVideoProcessor, tokenizer, image_pixels, patch_size=16)
    return Qwen3VLForConditionalGeneration, config, processor


def _llava(tokenizer, hidden: int, layers: int, image_pixels: int):
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.chat_template = LLAVA_CHAT_TEMPLATE
    side = max(14, round(image_pixels**0.5 / 14) * 14)  # CLIP sees a square of whole 14-pixel patches
    text = {k: v for k, v in _text_config(tokenizer, hidden, layers, []).items() if k != "rope_parameters"}
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": side,
            "patch_size": 14,
        },
        text_config={"model_type": "llama", **text},
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side}),
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's class token, which the "default" strategy drops
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration, config, processor


# The names of ARCHS, spelled out for the CLI's --arch: a choice, so a wrong one is a usage error (a test keeps the
# two equal)
TinyArch = Literal["qwen2-vl", "qwen2.5-vl", "qwen3-vl", "llava"]
# arch -> (parts builder, image pixels giving a 2x2 grid of merged patches: 56x56 for 14-pixel patches, 64x64
# for Qwen3-VL's 16-pixel ones)
ARCHS = {
    "qwen2-vl": (_qwen2_vl, 3136),
    "qwen2.5-vl": (_qwen2_5_vl, 3136),
    "qwen3-vl": (_qwen3_vl, 4096),
    "llava": (_llava, 3136),
}


def build_tiny(
    arch: str, out: Path, seed: int = 0, image_pixels: int | None = None, hidden: int = 64, layers: int = 2
) -> Path:
    """Write a tiny random checkpoint of `arch` (qwen2-vl, qwen2.5-vl, qwen3-vl, llava) with its processor to
    `out`."""
    if arch not in ARCHS:
        raise ValueError(f"--arch {arch}: no tiny builder for it; choose one of: {', '.join(ARCHS)}")
    if arch.startswith("qwen") and importlib.util.find_spec("torchvision") is None:
        # The slim image has PyTorch's CPU build and no torchvision (none matches it where the image is built).
        raise ModelError(
            f"tiny:{arch}: a Qwen-VL processor needs torchvision, which this environment lacks (the slim image has "
            "none); build the tiny model where training runs (the train image: compile the pipeline with --image "
            "set to it, or pass medrl run --image the train image), or give model.base a stored model"
        )
    import torch

    parts, default_pixels = ARCHS[arch]
    tokenizer = build_tokenizer()
    model_class, config, processor = parts(tokenizer, hidden, layers, image_pixels or default_pixels)
    ids = _special_ids(tokenizer)
    torch.manual_seed(seed)
    model = model_class(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = ids["<|endoftext|>"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
