"""How GRPO generates its rollouts: `train.rollout: auto | hf | vllm` as TRL GRPOConfig keyword arguments.

hf: transformers' `generate` inside the trainer (TRL's default). vllm: TRL's colocate mode, where a vLLM engine
shares each training GPU and receives the policy's weights after every optimizer step (`use_vllm=True,
vllm_mode="colocate"`). auto: vllm where a CUDA GPU and a vLLM inside TRL's supported range are present, else hf.

medrl's GRPO rows carry a conversational `prompt` and an `image` column (train/common.py `vision_dataset`): TRL
puts the image into the conversation itself and hands vLLM the prompt's token ids with the image as multi-modal
data. Rows must not be chat-templated or tokenised beforehand (TRL issues 6401, 5041: images lost or doubled).

Defaults fit the paper preset (Qwen2-VL-2B, bf16, on 80 GB GPUs, ZeRO-2 over 4 GPUs): the 2B policy's weights
(4.4 GB) plus a KV cache for 8 rollouts of 1,724 tokens (~0.4 GB at 28.7 KB per token) fit well inside 30% of
80 GB, leaving ~55 GB for training; sleep mode (weights and cache offloaded during the optimizer step) is off
because memory is not short and waking costs host-device copies every step; one GPU per engine (no tensor
parallelism) since the model fits one GPU many times over.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

from medrl.config import ConfigError
from medrl.errors import MedrlError
from medrl.evaluate.generate import cuda_available, resolve_engine, vllm_version

SETTING = "train.rollout"
# Qwen2-VL / Qwen2.5-VL: one image token per 28 x 28 pixels (14-pixel patches merged 2 x 2).
PIXELS_PER_IMAGE_TOKEN = 28 * 28
# The question, options, instruction and chat markup: the paper's prompt limit (1024) less a full-size image.
TEXT_TOKENS = 512


@dataclass(frozen=True)
class RolloutSettings:
    """What train.rollout (and its per-arm override) sets; the train-core config mirrors these fields."""

    engine: str = "auto"
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    sleep_mode: bool = False
    max_prompt_tokens: int | None = None  # None: one image of max_pixels plus TEXT_TOKENS


class EngineStartError(MedrlError):
    """The colocated vLLM engine could not start (a model it cannot serve, too little GPU memory for its share, a
    broken install): the same settings fail the same way, so the arm stops instead of restarting."""


def trl_vllm_range() -> Requirement:
    """The vLLM versions the installed TRL accepts (it refuses others at import), from TRL's own metadata."""
    (req,) = [Requirement(r) for r in md.requires("trl") or [] if Requirement(r).name == "vllm"]
    return req


def prompt_tokens(max_pixels: int, images: int = 1) -> int:
    """The longest prompt: `images` images of `max_pixels` and the text."""
    return images * (max_pixels // PIXELS_PER_IMAGE_TOKEN) + TEXT_TOKENS


def resolve_rollout(name: str, *, cuda: bool | None = None, vllm: str | None = "") -> str:
    """hf or vllm for `train.rollout=name`, or a ConfigError naming the setting and the fix before any model is
    loaded. As evaluate.engine, and a vLLM outside TRL's range counts as absent for auto and is refused for vllm."""
    vllm = vllm_version() if vllm == "" else vllm
    supported = trl_vllm_range()
    if vllm and not supported.specifier.contains(Version(vllm).base_version):
        if name == "vllm":
            raise ConfigError(
                f"{SETTING}=vllm: vLLM {vllm} is installed but TRL {md.version('trl')} accepts {supported} only; "
                f"install the GPU lock's vLLM (pip install -r requirements-gpu.lock) or set {SETTING}=hf"
            )
        vllm = None
    return resolve_engine(name, SETTING, cuda=cuda_available() if cuda is None else cuda, vllm=vllm)


def grpo_rollout_kwargs(
    settings: RolloutSettings,
    max_completion_length: int,
    max_pixels: int,
    *,
    cuda: bool | None = None,
    vllm: str | None = "",
) -> dict[str, Any]:
    """GRPOConfig keyword arguments for `settings`; `cuda`/`vllm` default to what this machine has."""
    if not 0.0 < settings.gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"{SETTING} gpu_memory_utilization={settings.gpu_memory_utilization}: give the fraction of each GPU's "
            "memory vLLM may take, above 0 and at most 1 (0.3 fits the paper preset)"
        )
    if settings.tensor_parallel_size < 1:
        raise ConfigError(f"{SETTING} tensor_parallel_size={settings.tensor_parallel_size}: give 1 or more GPUs")
    if resolve_rollout(settings.engine, cuda=cuda, vllm=vllm) == "hf":
        return {"use_vllm": False}
    prompt = settings.max_prompt_tokens or prompt_tokens(max_pixels)
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": settings.gpu_memory_utilization,
        # Prompt plus completion: shorter would cut completions below max_completion_length without a word.
        "vllm_max_model_length": prompt + max_completion_length,
        "vllm_tensor_parallel_size": settings.tensor_parallel_size,
        "vllm_enable_sleep_mode": settings.sleep_mode,
    }
