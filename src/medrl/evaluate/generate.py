"""Greedy generation with a vision-language model over the test split, by one of two engines:

- hf: transformers' `generate`, batched with left padding (any device);
- vllm: vLLM's offline engine (`vllm.LLM`) on a CUDA GPU, which schedules the whole split itself.

Both see the same prompt text (the processor's chat template with the images' placeholders), decode greedily up to
the same number of new tokens, stop at the model's end-of-sequence tokens and keep the repetition penalty of the
model's generation config, and drop special tokens from the text. Each answer says whether it was cut at the limit
(`truncated`), read from what the engine generated (hf: no EOS token among the new tokens; vllm: finish_reason
"length"), never from the decoded text. `evaluate.engine=auto` takes vllm where a GPU and vLLM are present.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple

from PIL import Image

from medrl.config import ConfigError, ModelConfig
from medrl.data.images import open_rgb
from medrl.data.prompt import prompt_messages
from medrl.data.records import Record
from medrl.errors import MedrlError
from medrl.evaluate.vllm_models import pinned
from medrl.models.load import load_model, local_dir

log = logging.getLogger("medrl")

ENGINES = ("auto", "hf", "vllm")
Engine = Literal["hf", "vllm"]
# Prompts handed to vLLM per call: it batches them itself; the chunk bounds how many decoded images are in memory.
VLLM_CHUNK = 512


class Completion(NamedTuple):
    """One generated answer: its text (special tokens dropped), and whether generation stopped because it reached
    the token limit (`evaluate.max_new_tokens`) rather than at an end-of-sequence token."""

    text: str
    truncated: bool


def vllm_version() -> str | None:
    """The installed vLLM's version, read from its metadata (importing vllm would initialise CUDA)."""
    try:
        return md.version("vllm")
    except md.PackageNotFoundError:
        return None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def generation_device() -> str:
    """Where the hf engine generates: the GPU when there is one. from_pretrained loads onto the CPU, and a model left
    there generates on the CPU of a GPU node (days for the 7K-question split, and flash-attention refuses CPU)."""
    return "cuda" if cuda_available() else "cpu"


def resolve_engine(
    name: str,
    setting: str = "evaluate.engine",
    *,
    cuda: bool | None = None,
    vllm: str | None = "",
    architecture: str | None = None,
) -> Engine:
    """The engine `name` (auto | hf | vllm) stands for here, or a ConfigError naming `setting` and the fix, before
    any model is loaded. `cuda` and `vllm` (a version, None when absent) default to what this machine has. With the
    model's `architecture` (config.json's), auto takes vllm only where the pinned vLLM has that architecture, and
    vllm for another is refused."""
    if name not in ENGINES:
        raise ConfigError(f"{setting}={name!r}: unknown; choose one of {', '.join(ENGINES)}")
    if name == "hf":
        return "hf"
    unserved = architecture is not None and not vllm_serves(architecture)
    if name == "vllm" and unserved:
        raise ConfigError(
            f"{setting}=vllm: {unserved_reason(architecture or '')}; set {setting}=hf (auto picks hf for it)"
        )
    cuda = cuda_available() if cuda is None else cuda
    vllm = vllm_version() if vllm == "" else vllm
    if name == "auto":
        return "vllm" if cuda and vllm and not unserved else "hf"
    if not cuda:
        raise ConfigError(
            f"{setting}=vllm needs a CUDA GPU and none is visible here; set {setting}=hf (or auto) to generate with "
            "transformers, or run on a GPU node"
        )
    if not vllm:
        raise ConfigError(
            f"{setting}=vllm needs the vllm package, which is not installed in this environment; use the GPU "
            f"image (pip install -r requirements-gpu.lock) or set {setting}=hf (or auto)"
        )
    return "vllm"


def vllm_serves(architecture: str) -> bool:
    return architecture in pinned().generating


def unserved_reason(architecture: str) -> str:
    reg = pinned()
    if architecture in reg.removed:
        return (f"the model's architecture {architecture} was removed from vLLM after {reg.removed[architecture]}; "
                f"the GPU image's vLLM {reg.version} cannot load it")  # fmt: skip
    return f"the model's architecture {architecture} is not one vLLM {reg.version} (the GPU image's) generates with"


def model_architecture(model_ref: str, trust_remote_code: bool = False) -> str | None:
    """`architectures[0]` of the model's config.json (a local or store folder, or a hub id through the hub's cache),
    or None when it cannot be read."""
    from transformers import PretrainedConfig

    try:
        config, _ = PretrainedConfig.get_config_dict(local_dir(model_ref), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, MedrlError) as err:
        log.warning("could not read the architecture of %s (%s); the engine is chosen without it", model_ref, err)
        return None
    archs = config.get("architectures") or []
    return archs[0] if archs else None


def _image(data_dir: Path, rel: str) -> Image.Image:
    # Refuses a high-bit-depth image rather than clip it to white (prep windows those into 8 bits).
    return open_rgb(data_dir / rel, "an image of the test split")


def chat_text(processor, rec: Record, instruction: str, images: list[Image.Image]) -> str:
    """The prompt exactly as the model sees it: the chat template with one placeholder per image."""
    from trl.data_utils import prepare_multimodal_messages

    return processor.apply_chat_template(
        prepare_multimodal_messages(prompt_messages(rec, instruction), images=images),
        tokenize=False,
        add_generation_prompt=True,
    )


def eos_ids(generation_config) -> list[int]:
    """The end-of-sequence token ids `generate` stops at: the generation config's eos_token_id, an id or a list.

    >>> from types import SimpleNamespace as Config
    >>> eos_ids(Config(eos_token_id=[2, 7])), eos_ids(Config(eos_token_id=2)), eos_ids(Config(eos_token_id=None))
    ([2, 7], [2], [])
    """
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]


def cut_at_limit(new_tokens, eos: list[int]) -> list[bool]:
    """Per row of generated token ids (prompt removed): True when no end-of-sequence token is among them, so the row
    ran to max_new_tokens. A row that ended while others went on is padded after its EOS (the EOS is still there);
    one whose EOS is the last token allowed ended, it was not cut. Without EOS ids every row runs to the limit."""
    import torch

    if not eos:
        return [True] * new_tokens.shape[0]
    ended = torch.isin(new_tokens, torch.tensor(eos, device=new_tokens.device)).any(dim=1)
    return (~ended).tolist()


def generate(
    model, processor, records: list[Record], data_dir: Path, instruction: str, max_new_tokens: int, batch_size: int
) -> Iterator[Completion]:
    """Yield one completion per record, in order, generated `batch_size` prompts at a time."""
    import torch

    model.eval()
    tokenizer = processor.tokenizer
    eos = eos_ids(model.generation_config)  # what generate stops at, since no eos_token_id is passed to it
    for start in range(0, len(records), batch_size):
        batch = records[start : start + batch_size]
        texts, images = [], []
        for rec in batch:
            imgs = [_image(data_dir, p) for p in rec.images]
            texts.append(chat_text(processor, rec, instruction, imgs))
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
        answers = tokenizer.batch_decode(new, skip_special_tokens=True)
        yield from map(Completion, answers, cut_at_limit(new, eos))


def vllm_prompts(processor, records: list[Record], data_dir: Path, instruction: str) -> list[dict]:
    """vLLM's prompt inputs: the same text as the hf engine, with the decoded images as multi-modal data."""
    prompts = []
    for rec in records:
        imgs = [_image(data_dir, p) for p in rec.images]
        prompt: dict = {"prompt": chat_text(processor, rec, instruction, imgs)}
        if imgs:
            prompt["multi_modal_data"] = {"image": imgs if len(imgs) > 1 else imgs[0]}
        prompts.append(prompt)
    return prompts


def vllm_completion(output) -> Completion:
    """The answer in a vLLM RequestOutput (its first CompletionOutput). vLLM 0.30 sets finish_reason "length" when
    max_tokens (or the model's context) ran out, "stop" at an EOS token or stop string."""
    first = output.outputs[0]
    return Completion(first.text, first.finish_reason == "length")


def generate_vllm(
    model_dir: str,
    processor,
    records: list[Record],
    data_dir: Path,
    instruction: str,
    max_new_tokens: int,
    model_cfg: ModelConfig,
    gpu_memory_utilization: float = 0.85,
    seed: int = 0,
) -> Iterator[Completion]:
    """Yield one completion per record, in order, from vLLM's offline engine loading the checkpoint in `model_dir`.
    The engine is shut down when the last completion has been yielded (the metric models need the GPU next)."""
    import gc

    from vllm import LLM, SamplingParams

    llm = LLM(
        model=model_dir,
        dtype=model_cfg.dtype,  # the hf engine's dtype too, so that the two engines can agree
        seed=seed,
        trust_remote_code=model_cfg.trust_remote_code,
        gpu_memory_utilization=gpu_memory_utilization,
        limit_mm_per_prompt={"image": max((len(r.images) for r in records), default=0)},
        mm_processor_kwargs={"min_pixels": model_cfg.min_pixels, "max_pixels": model_cfg.max_pixels},
    )
    try:
        # The model's generation config supplies the repetition penalty transformers' generate applies too;
        # temperature 0 is vLLM's greedy decoding. EOS tokens come from the same generation config.
        defaults = llm.get_default_sampling_params()
        params = SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            repetition_penalty=defaults.repetition_penalty,
            skip_special_tokens=True,
            seed=seed,
        )
        for start in range(0, len(records), VLLM_CHUNK):
            chunk = vllm_prompts(processor, records[start : start + VLLM_CHUNK], data_dir, instruction)
            for out in llm.generate(chunk, params, use_tqdm=False):
                yield vllm_completion(out)
    finally:
        del llm
        gc.collect()


def generate_with(
    engine: str,
    model_ref: str,
    model_cfg: ModelConfig,
    processor,
    records: list[Record],
    data_dir: Path,
    instruction: str,
    max_new_tokens: int,
    batch_size: int,
) -> Iterator[Completion]:
    """Completions for `records` by the engine `engine` (auto | hf | vllm: `evaluate.engine`). The engine is
    resolved before any model is loaded; the model is let go when the last completion has been yielded."""

    architecture = model_architecture(model_ref, model_cfg.trust_remote_code) if engine != "hf" else None
    if resolve_engine(engine, architecture=architecture) == "vllm":
        return generate_vllm(local_dir(model_ref), processor, records, data_dir, instruction, max_new_tokens, model_cfg)
    model = load_model(model_ref, model_cfg).to(generation_device())
    return generate(model, processor, records, data_dir, instruction, max_new_tokens, batch_size)
