"""Load a model and its processor by reference: a hub id, a local directory, or a committed store URI."""

from __future__ import annotations

from pathlib import Path

from medrl import store
from medrl.config import ModelConfig
from medrl.errors import MedrlError


class ModelError(MedrlError):
    """A model folder that cannot be loaded; the message names it and the fix."""


def local_dir(ref: str) -> str:
    """A local folder for `ref`, checked against its MANIFEST first (a store URI is downloaded; a committed local
    folder is verified, a damaged one refused before any weight is read). Hub ids and folders that are not medrl
    artifacts (a hub snapshot) pass through."""
    return str(store.verified(ref))


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
    from safetensors import SafetensorError

    folder = local_dir(ref)
    try:
        return AutoModelForImageTextToText.from_pretrained(folder, **kwargs)
    except SafetensorError as err:  # a truncated or overwritten weights file: say which model, not a traceback
        raise ModelError(f"{ref}: its weights cannot be read ({err}); download or train the model again") from None


def save_model(model, processor, out: Path) -> None:
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
