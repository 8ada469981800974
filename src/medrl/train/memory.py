"""Per-GPU memory of one arm's training, estimated from its settings and the model's geometry, so that a plan can
be checked before GPUs are booked (`medrl plan`). Bytes per part, bf16 weights and activations:

- weights 2 B/parameter (a frozen reference model for GRPO/DPO with beta > 0 doubles it; a LoRA arm's reference
  is the base with its adapters disabled, so it costs nothing);
- gradients 2 B and AdamW 12 B (fp32 master copy and two moments) per trainable parameter, both split over the
  GPUs by ZeRO-2, plus its reduce bucket (5e8 elements by default);
- activations per token and layer: about 16 h + 6 I bytes (h hidden, I MLP width; flash attention keeps no
  s x s scores), or 2 h with gradient checkpointing (layer inputs) plus one layer recomputed;
- logits of the completion tokens: vocab x (2 B bf16 + 4 B fp32 log-softmax).
A sequence is the prompt (text + image tokens) plus the completion; GRPO forwards num_generations of them per
prompt. The vision tower's own activations count only when it trains. The sum is an estimate (allocator
fragmentation, CUDA context and NCCL buffers come on top, about 10 %).

A GRPO arm that rolls out with a colocated vLLM engine adds vLLM's reservation, `vllm_gpu_memory_utilization` x
the card's memory, which vLLM takes whole at start (weights, then the rest as KV cache). What the rollouts need of
it: the policy's bf16 weights (2 B/parameter) + KV_MARGIN x the KV cache of one rank's sequences (per_device_batch_size
x num_generations, each vllm_max_model_length = prompt + completion tokens long, 2 x layers x KV width x 2 B per
token) + VLLM_WORKSPACE (its profiling activations, CUDA graphs, sampler). The default utilization is that need over
the card's memory, rounded up to a multiple of 0.05.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from medrl.config import ArmConfig, GrpoArm, LoraArm, StudyConfig
from medrl.models.sizes import Geometry, config_of, geometry
from medrl.train.rollout import EXPANDED_PROMPTS, prompt_tokens

GIB = 1024**3
PROMPT_TEXT_TOKENS = 160  # the instruction, the question and four options, as tokenized by Qwen2's BPE
PATCH = 14  # Qwen2-VL: 14-pixel patches, 2 x 2 merged into one image token
OVERHEAD = 1.10  # fragmentation, CUDA context, communication buffers
ZERO_BUCKET_BYTES = 2 * 500_000_000  # DeepSpeed's default reduce bucket of 5e8 bf16 elements
# vLLM allocates the KV cache in 16-token blocks and batches all of a rank's rollouts at once; twice their size leaves
# room for block rounding and preemption-free scheduling.
KV_MARGIN = 2.0
VLLM_WORKSPACE = 2 * GIB  # vLLM's profiling activations, CUDA graphs and sampler buffers
VLLM_STEP = 0.05  # the default utilization is rounded up to this


@dataclass(frozen=True)
class MemoryPlan:
    arm: str
    parts: dict[str, float]  # bytes per GPU of training
    gpu_bytes: float
    vllm: float = 0.0  # bytes of the card the colocated vLLM engine reserves
    vllm_need: float = 0.0  # what its rollouts need of that reservation
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.parts.values()) * OVERHEAD + self.vllm

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_bytes and self.vllm >= self.vllm_need

    def line(self) -> str:
        parts = ", ".join(f"{name} {size / GIB:.1f}" for name, size in self.parts.items() if size)
        if self.vllm:
            parts += f", vLLM reservation {self.vllm / GIB:.1f} (needs {self.vllm_need / GIB:.1f})"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        notes = "".join(f"; {n}" for n in self.notes)
        return (f"{self.arm}: {self.total / GIB:.1f} GiB of {self.gpu_bytes / GIB:.0f} GiB per GPU ({verdict}; {parts})"
                f"{notes}")  # fmt: skip


def image_tokens(max_pixels: int) -> int:
    return max_pixels // (PATCH * PATCH * 4)


def kv_bytes_per_token(geo: Geometry) -> int:
    """Keys and values of every layer for one token, bf16."""
    return 2 * geo.layers * geo.kv_width * 2


def vllm_need(spec: GrpoArm, geo: Geometry, max_pixels: int) -> float:
    """Bytes a colocated vLLM engine needs for one rank's rollouts of GRPO arm `spec` (see the module docstring)."""
    sequences = spec.per_device_batch_size * spec.num_generations
    tokens = (spec.vllm_max_prompt_tokens or prompt_tokens(max_pixels)) + spec.max_completion_length
    return 2.0 * geo.parameters + KV_MARGIN * sequences * tokens * kv_bytes_per_token(geo) + VLLM_WORKSPACE


def vllm_utilization(need: float, gpu_bytes: float) -> float:
    """The default vllm_gpu_memory_utilization: `need` over the card's memory, rounded up to VLLM_STEP.

    >>> vllm_utilization(9 * GIB, 80 * GIB)
    0.15
    """
    return min(1.0, round(math.ceil(need / gpu_bytes / VLLM_STEP - 1e-9) * VLLM_STEP, 2))


def lora_parameters(geo: Geometry, spec: LoraArm) -> int:
    """Adapter parameters: r x (in + out) for each adapted projection of each layer."""
    h, kv, mlp, r = geo.hidden_size, geo.kv_width, geo.intermediate_size, spec.lora.r
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}
    shapes |= {"gate_proj": (h, mlp), "up_proj": (h, mlp), "down_proj": (mlp, h)}
    return geo.layers * sum(r * (i + o) for name, (i, o) in shapes.items() if name in spec.lora.target_modules)


def estimate(
    arm: str, spec, geo: Geometry, max_pixels: int, gpus: int, gpu_gib: float, vllm: bool = False
) -> MemoryPlan:
    """The per-GPU memory of training `spec` (an arm's settings) on `gpus` GPUs of `gpu_gib` GiB each; with `vllm`,
    the arm's rollouts come from a colocated vLLM engine and its reservation counts."""
    method = spec.method
    if method == "none":
        return MemoryPlan(arm, {"weights": 2.0 * geo.parameters}, gpu_gib * GIB)
    lora = method == "lora"
    shards = gpus if spec.deepspeed else 1
    frozen_vision = lora and spec.lora.freeze_vision
    trainable = lora_parameters(geo, spec) if lora else geo.parameters
    rl = method in ("grpo", "dr_grpo")
    sequences = spec.per_device_batch_size * (spec.num_generations if rl else 1) * (2 if method == "dpo" else 1)
    completion = spec.max_completion_length if rl else 256  # SFT/DPO targets: a short rationale and the answer
    tokens = sequences * (PROMPT_TEXT_TOKENS + image_tokens(max_pixels) + completion)
    h, layers, intermediate = geo.hidden_size, geo.layers, geo.intermediate_size
    per_token_layer = 2 * h if spec.gradient_checkpointing else 16 * h + 6 * intermediate
    recomputed = tokens * (16 * h + 6 * intermediate) if spec.gradient_checkpointing else 0
    vision_tokens = sequences * image_tokens(max_pixels) * 4  # patches before the 2 x 2 merge
    width = geo.vision_width  # the vision MLP is 4 x wide: 16 w + 6 x 4 w bytes per patch and layer
    vision = (
        0.0
        if frozen_vision
        else vision_tokens
        * (
            geo.vision_layers * 2 * width + 40 * width
            if spec.gradient_checkpointing
            else geo.vision_layers * 40 * width
        )
    )
    # GRPO's KL term (beta > 0) and DPO need a frozen reference model; with LoRA the reference is the base itself.
    reference = 2.0 * geo.parameters if (method == "dpo" or (rl and spec.beta > 0)) and not lora else 0.0
    parts = {
        "weights": 2.0 * geo.parameters + (2.0 * trainable if lora else 0.0),
        "reference": reference,
        "gradients": 2.0 * trainable / shards,
        "optimizer": 12.0 * trainable / shards,
        "zero buckets": float(ZERO_BUCKET_BYTES) if spec.deepspeed and not lora else 0.0,
        "activations": float(tokens * layers * per_token_layer + recomputed),
        "vision activations": float(vision),
        "logits": float(sequences * completion * geo.vocab_size * 6),
    }
    if not (vllm and rl):
        return MemoryPlan(arm, parts, gpu_gib * GIB)
    need = vllm_need(spec, geo, max_pixels)
    share = spec.vllm_gpu_memory_utilization or vllm_utilization(need, gpu_gib * GIB)
    notes = []
    if share * gpu_gib * GIB < need:
        notes.append(
            f"arms.{arm}.vllm_gpu_memory_utilization={share} gives vLLM {share * gpu_gib:.1f} GiB, below the "
            f"{need / GIB:.1f} GiB its rollouts need: raise it to {vllm_utilization(need, gpu_gib * GIB)} or unset it"
        )
    return MemoryPlan(arm, parts, gpu_gib * GIB, vllm=share * gpu_gib * GIB, vllm_need=need, notes=notes)


def start_model(cfg: StudyConfig, name: str) -> str:
    """The model whose geometry an arm trains: the one its chain of `init: arm:<name>` starts from."""
    spec = cfg.arms[name]
    while spec.init.startswith("arm:"):
        spec = cfg.arms[spec.init[4:]]
    return (spec.model or cfg.model.base) if spec.init == "base" else spec.init


def plan_study(cfg: StudyConfig, gpus: int, gpu_gib: float) -> list[MemoryPlan | str]:
    """Every trained arm's plan; an arm whose model geometry cannot be read here gets a line saying why."""

    geometries: dict[str, Geometry] = {}
    plans: list[MemoryPlan | str] = []
    for name, spec in cfg.arms.items():
        if spec.method == "none":
            continue
        ref = start_model(cfg, name)
        try:
            geometries[ref] = geometries.get(ref) or geometry(config_of(ref))
        except (OSError, ValueError) as err:
            plans.append(f"{name}: no config.json of {ref} here ({type(err).__name__}); give a local model directory")
            continue
        plans.append(estimate(name, spec, geometries[ref], cfg.model.max_pixels, gpus, gpu_gib,
                              vllm=rolls_out_with_vllm(spec, config_of(ref))))  # fmt: skip
    return plans


def rolls_out_with_vllm(spec: ArmConfig, config) -> bool:
    """Whether a GRPO arm takes a colocated vLLM engine on a GPU node with the GPU image: rollout vllm, or auto for
    a model vLLM reads as training does (medrl.train.rollout)."""
    if getattr(spec, "rollout", "hf") == "hf" or spec.method not in ("grpo", "dr_grpo"):
        return False
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES as CLASSES

    # config.json's architecture; a config built here (a known hub id) has none: transformers' class for its type
    architecture = (getattr(config, "architectures", None) or [CLASSES.get(config.model_type, "")])[0]
    return spec.rollout == "vllm" or architecture not in EXPANDED_PROMPTS
