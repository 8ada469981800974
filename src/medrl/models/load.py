"""Load a model and its processor by reference: a hub id, a local directory, or a committed store URI."""

from __future__ import annotations

from pathlib import Path

from medrl.config import ModelConfig
from medrl.infra import store


def local_dir(ref: str) -> str:
    """Store URIs resolve to a local committed copy; hub ids and plain directories pass through."""
    if ref.startswith(("file://", "s3://")):
        return str(store.open_dir(ref))
    return ref


def load_processor(ref: str, cfg: ModelConfig):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(
        local_dir(ref),
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
        trust_remote_code=cfg.trust_remote_code,
    )
    processor.tokenizer.padding_side = "left"
    return processor


def load_model(ref: str, cfg: ModelConfig):
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs = {"dtype": getattr(torch, cfg.dtype), "trust_remote_code": cfg.trust_remote_code}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    return AutoModelForImageTextToText.from_pretrained(local_dir(ref), **kwargs)


def save_model(model, processor, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
