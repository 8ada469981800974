"""How GRPO generates its rollouts: `train.rollout: auto | hf | vllm` as TRL GRPOConfig keyword arguments.

hf: transformers' `generate` inside the trainer (TRL's default). vllm: TRL's colocate mode, where a vLLM engine
shares each training GPU and receives the policy's weights after every optimizer step (`use_vllm=True,
vllm_mode="colocate"`). auto: vllm where a CUDA GPU and a vLLM inside TRL's supported range are present and the model
is one vLLM reads as training does, else hf.

Why not every model: TRL 1.16 tokenises each prompt with the processor (`GRPOTrainer._tokenize_prompts`), which for
Qwen2-VL, Qwen2.5-VL, Qwen3-VL (and LLaVA) already expands each image placeholder into one pad token per image
patch, then hands vLLM those token ids together with the raw image (`generation/vllm_generation.py`:
`prompt_token_ids` + `multi_modal_data`). vLLM 0.30 expands the placeholder again (its prompt replacement targets the
single pad token, once per image), so a rollout's prompt holds about twice the image tokens and only one run of
them gets the image's embeddings: rollouts sampled from a prompt training never sees (TRL issues 6294 and 6401; the
fix, TRL PR 6718, is not in 1.16). TRL also starts the engine without `mm_processor_kwargs`, so vLLM would size
images by the hub's max_pixels, not model.max_pixels. Until the locked TRL passes vLLM unexpanded prompts, these
architectures roll out with hf (auto) and `vllm` is refused for them with this reason.

vLLM's share of each GPU defaults to what the arm's rollouts need over the card's memory (train/memory.py: weights
+ 2 x the KV cache of one rank's rollouts + 2 GiB, rounded up to 0.05; 0.1 for a 2B policy with 8 rollouts of
1,724 tokens on 80 GB); sleep mode is off because memory is not short and waking costs host-device copies every
step; one GPU per engine (no tensor parallelism) since a 2B model fits one GPU many times over.
"""

from __future__ import annotations

import importlib.metadata as md
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

from medrl.config import ConfigError, StudyConfig
from medrl.errors import MedrlError
from medrl.evaluate.generate import (
    cuda_available,
    model_architecture,
    resolve_engine,
    unserved_reason,
    vllm_serves,
    vllm_version,
)

SETTING = "train.rollout"
# Architectures whose processor expands the image placeholder in the prompt ids TRL hands vLLM (see the docstring);
# tests/unit/test_rollout_prompts.py shows the expansion with TRL's own tokenisation and each tiny model's processor.
EXPANDED_PROMPTS = frozenset({
    "Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration", "Qwen3VLForConditionalGeneration",
    "Qwen3VLMoeForConditionalGeneration", "LlavaForConditionalGeneration",
})  # fmt: skip
EXPANDED_REASON = (
    "TRL {trl} hands vLLM prompt token ids in which the processor already expanded each image into its pad tokens, "
    "and vLLM expands them again: rollouts would see about twice the image tokens, half without the image (TRL "
    "issues 6294, 6401)"
)
# Qwen2-VL / Qwen2.5-VL: one image token per 28 x 28 pixels (14-pixel patches merged 2 x 2).
PIXELS_PER_IMAGE_TOKEN = 28 * 28
# The question, options, instruction and chat markup: the paper's prompt limit (1024) less a full-size image.
TEXT_TOKENS = 512


@dataclass(frozen=True)
class RolloutSettings:
    """What train.rollout (and its per-arm override) sets; the train-core config mirrors these fields."""

    engine: str = "auto"
    gpu_memory_utilization: float | None = None  # None: derived from the arm's KV cache (train/memory.py)
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


def refuse_vllm_for(architecture: str | None, setting: str = SETTING) -> None:
    """A ConfigError with the reason and the fix when vLLM rollouts would read `architecture`'s prompts differently
    from training."""
    if architecture in EXPANDED_PROMPTS:
        reason = EXPANDED_REASON.format(trl=md.version("trl"))
        raise ConfigError(f"{setting}=vllm: not for {architecture}: {reason}; set {setting}=hf (auto picks hf for it)")


def resolve_rollout(
    name: str, *, cuda: bool | None = None, vllm: str | None = "", architecture: str | None = None
) -> str:
    """hf or vllm for `train.rollout=name`, or a ConfigError naming the setting and the fix before any model is
    loaded. As evaluate.engine, and a vLLM outside TRL's range counts as absent for auto and is refused for vllm; a
    model `architecture` vLLM would read differently from training (EXPANDED_PROMPTS) gets hf from auto and is
    refused for vllm; an unknown one (None) gets hf from auto."""
    if name == "vllm":
        refuse_vllm_for(architecture)
    if name == "auto" and (architecture is None or architecture in EXPANDED_PROMPTS):
        # None: config.json could not be read (e.g. the store did not answer once), yet the model may load a moment
        # later; vLLM could then be rolling out a Qwen2-VL with every image expanded twice, so auto takes hf.
        return "hf"
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
    architecture: str | None = None,
    derived_utilization: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """GRPOConfig keyword arguments for `settings` and the policy's `architecture` (config.json's, None when
    unknown); `cuda`/`vllm` default to what this machine has. `derived_utilization` gives vLLM's share of the GPU
    when the settings leave it unset (called only when vLLM is chosen)."""
    if settings.gpu_memory_utilization is not None and not 0.0 < settings.gpu_memory_utilization <= 1.0:
        raise ConfigError(
            f"{SETTING} gpu_memory_utilization={settings.gpu_memory_utilization}: give the fraction of each GPU's "
            "memory vLLM may take, above 0 and at most 1 (0.3 fits the paper preset)"
        )
    if settings.tensor_parallel_size < 1:
        raise ConfigError(f"{SETTING} tensor_parallel_size={settings.tensor_parallel_size}: give 1 or more GPUs")
    if resolve_rollout(settings.engine, cuda=cuda, vllm=vllm, architecture=architecture) == "hf":
        return {"use_vllm": False}
    prompt = settings.max_prompt_tokens or prompt_tokens(max_pixels)
    return {
        "use_vllm": True,
        "vllm_mode": "colocate",
        "vllm_gpu_memory_utilization": settings.gpu_memory_utilization
        or (derived_utilization() if derived_utilization else 0.3),
        # Prompt plus completion: shorter would cut completions below max_completion_length without a word.
        "vllm_max_model_length": prompt + max_completion_length,
        "vllm_tensor_parallel_size": settings.tensor_parallel_size,
        "vllm_enable_sleep_mode": settings.sleep_mode,
    }


def check_vllm_models(cfg: StudyConfig) -> None:
    """Refuse, at configuration (the run's init), a study that asks vLLM for a model it cannot serve correctly:
    `evaluate.engine: vllm` with a model the pinned vLLM does not have, `rollout: vllm` for a GRPO arm whose prompts
    vLLM would read differently from training (this module's docstring). Models whose config.json cannot be read
    yet (a hub id without hub access) are checked again when their evaluation or training starts."""
    for arm, spec in cfg.arms.items():
        rollout = getattr(spec, "rollout", None) if spec.method in ("grpo", "dr_grpo") else None
        if cfg.evaluate.engine != "vllm" and rollout != "vllm":
            continue
        ref = spec.init
        while ref.startswith("arm:"):  # a trained arm keeps the architecture of the model it starts from
            parent = cfg.arms[ref[4:]]
            ref = parent.init if parent.init != "base" else parent.model or cfg.model.base
        if ref == "base":
            ref = spec.model or cfg.model.base
        arch = model_architecture(ref, cfg.model.trust_remote_code)
        if arch is None:
            continue
        if cfg.evaluate.engine == "vllm" and not vllm_serves(arch):
            raise ConfigError(
                f"evaluate.engine=vllm: arm {arm}: {unserved_reason(arch)}; set evaluate.engine=auto (hf for this "
                "model, vLLM for the others) or hf"
            )
        if rollout == "vllm":
            refuse_vllm_for(arch, f"arms.{arm}.rollout")
