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
"""

from __future__ import annotations

from dataclasses import dataclass

from medrl.models.sizes import Geometry, config_of, geometry

GIB = 1024**3
PROMPT_TEXT_TOKENS = 160  # the instruction, the question and four options, as tokenized by Qwen2's BPE
PATCH = 14  # Qwen2-VL: 14-pixel patches, 2 x 2 merged into one image token
OVERHEAD = 1.10  # fragmentation, CUDA context, communication buffers
ZERO_BUCKET_BYTES = 2 * 500_000_000  # DeepSpeed's default reduce bucket of 5e8 bf16 elements


@dataclass(frozen=True)
class MemoryPlan:
    arm: str
    parts: dict[str, float]  # bytes per GPU
    gpu_bytes: float

    @property
    def total(self) -> float:
        return sum(self.parts.values()) * OVERHEAD

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_bytes

    def line(self) -> str:
        parts = ", ".join(f"{name} {size / GIB:.1f}" for name, size in self.parts.items() if size)
        verdict = "fits" if self.fits else "DOES NOT FIT"
        return f"{self.arm}: {self.total / GIB:.1f} GiB of {self.gpu_bytes / GIB:.0f} GiB per GPU ({verdict}; {parts})"


def image_tokens(max_pixels: int) -> int:
    return max_pixels // (PATCH * PATCH * 4)


def lora_parameters(geo: Geometry, spec) -> int:
    """Adapter parameters: r x (in + out) for each adapted projection of each layer."""
    h, kv, mlp, r = geo.hidden_size, geo.kv_width, geo.intermediate_size, spec.lora.r
    shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}
    shapes |= {"gate_proj": (h, mlp), "up_proj": (h, mlp), "down_proj": (mlp, h)}
    return geo.layers * sum(r * (i + o) for name, (i, o) in shapes.items() if name in spec.lora.target_modules)


def estimate(arm: str, spec, geo: Geometry, max_pixels: int, gpus: int, gpu_gib: float) -> MemoryPlan:
    """The per-GPU memory of training `spec` (an arm's settings) on `gpus` GPUs of `gpu_gib` GiB each."""
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
    return MemoryPlan(arm, parts, gpu_gib * GIB)


def start_model(cfg, name: str) -> str:
    """The model whose geometry an arm trains: the one its chain of `init: arm:<name>` starts from."""
    spec = cfg.arms[name]
    while spec.init.startswith("arm:"):
        spec = cfg.arms[spec.init[4:]]
    return (spec.model or cfg.model.base) if spec.init == "base" else spec.init


def plan_study(cfg, gpus: int, gpu_gib: float) -> list[MemoryPlan | str]:
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
        plans.append(estimate(name, spec, geometries[ref], cfg.model.max_pixels, gpus, gpu_gib))
    return plans
