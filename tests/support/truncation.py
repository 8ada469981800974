"""A real greedy run of the tiny model where, in one left-padded batch, some answers end at an end-of-sequence token
before the token limit (padded after it while the others go on), one ends exactly at the limit and the rest are
cut: which is which is read from the token ids of a reference run before medrl's generation is asked."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from medrl.data.records import Record
from medrl.evaluate.generate import _image, chat_text

REFERENCE_TOKENS = 16


@dataclass
class Cutoff:
    eos: list[int]  # the generation config's eos_token_id for the run: the model's EOS and two tokens it generates
    limit: int  # max_new_tokens: one answer's EOS is its last allowed token
    truncated: list[bool]  # per record: no EOS within `limit` tokens of the reference run
    texts: list[str]  # per record: the reference tokens up to its EOS (included) or the limit, decoded
    prompt_lengths: list[int]  # per record: prompt tokens without padding


def plan_cutoff(model, processor, records: list[Record], data_dir: Path, instruction: str) -> Cutoff:
    """Generate greedily without any EOS (each row runs to REFERENCE_TOKENS), then make two of the generated tokens
    EOS tokens too: an early one (row 1's 4th token) and a late one (row 0's 10th), and set the limit just after
    the latest first stop, so that row ends exactly at it."""
    texts, images = [], []
    for rec in records:
        imgs = [_image(data_dir, p) for p in rec.images]
        texts.append(chat_text(processor, rec, instruction, imgs))
        images.extend(imgs)
    inputs = processor(text=texts, images=images or None, padding=True, return_tensors="pt")
    config = copy.deepcopy(model.generation_config)
    own_eos = config.eos_token_id
    config.eos_token_id = None
    with torch.inference_mode():
        out = model.eval().generate(
            **inputs,
            generation_config=config,
            max_new_tokens=REFERENCE_TOKENS,
            do_sample=False,
            pad_token_id=processor.tokenizer.pad_token_id,
        )
    raw = out[:, inputs["input_ids"].shape[1] :].tolist()
    assert all(len(row) == REFERENCE_TOKENS for row in raw), "the reference run stopped early"
    eos = [*([own_eos] if isinstance(own_eos, int) else own_eos), raw[1][3], raw[0][9]]
    first = [next((j for j, t in enumerate(row) if t in eos), None) for row in raw]
    limit = max(p for p in first if p is not None) + 1
    truncated = [p is None for p in first]
    assert any(truncated), f"no answer runs past the limit {limit}: first stops {first}"
    assert any(p is not None and p < limit - 1 for p in first), f"no answer ends before the others: {first}"
    decoded = [
        processor.tokenizer.decode(row[: limit if p is None else p + 1], skip_special_tokens=True)
        for row, p in zip(raw, first, strict=True)
    ]
    lengths = inputs["attention_mask"].sum(dim=1).tolist()
    return Cutoff(eos, limit, truncated, decoded, lengths)
