"""Batched greedy generation with a vision-language model (left padding, one image per prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from medrl.data.prompt import prompt_messages
from medrl.data.records import Record


def _image(data_dir: Path, rel: str) -> Image.Image:
    with Image.open(data_dir / rel) as im:
        return im.convert("RGB")


def generate(
    model, processor, records: list[Record], data_dir: Path, instruction: str, max_new_tokens: int, batch_size: int
) -> Iterator[str]:
    """Yield one completion per record, in order, generated `batch_size` prompts at a time."""
    import torch
    from trl.data_utils import prepare_multimodal_messages

    model.eval()
    tokenizer = processor.tokenizer
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        texts, images = [], []
        for rec in batch:
            imgs = [_image(data_dir, p) for p in rec.images]
            texts.append(
                processor.apply_chat_template(
                    prepare_multimodal_messages(prompt_messages(rec, instruction), images=imgs),
                    tokenize=False,
                    add_generation_prompt=True,
                )
            )
            images.extend(imgs)
        inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        yield from tokenizer.batch_decode(new, skip_special_tokens=True)
