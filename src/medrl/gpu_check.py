"""`make gpu-check` (python -m medrl.gpu_check): GRPO and evaluation speed of a Qwen2-VL-2B-sized model on this
CUDA machine, with transformers' generate and, where vLLM is installed and serves the model correctly, with vLLM.
Prints one JSON object.

The shape is the paper preset's per device: 2 prompts x 8 generations, gradient accumulation 2, 700 completion tokens,
images of up to 401,408 pixels for both engines, bf16, flash-attention 2 when installed (else sdpa). The model has the
2B geometry (models/sizes.py) with the real 151,936-row vocabulary (its logits are a large share of GRPO's memory)
and random weights; the tiny model's tokenizer stands in for Qwen's (ids beyond it decode to nothing). Random weights
rarely emit end-of-sequence, so rollouts and answers run to their token limit: upper bounds on the time of a trained
model's shorter answers. The checkpoint is saved to disk first because vLLM loads from a folder. Each part runs in
its own process so that each one's peak GPU memory is its own and the engines do not share a CUDA context.

`--cpu` runs the same code path on this machine's CPU with the tiny model, a few tokens and steps: the unit tests
use it so that the GPU run cannot fail on first contact for a reason a CPU could show.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medrl.config import DataConfig, ModelConfig, load_config
from medrl.data.prep import prepare
from medrl.data.prompt import DEFAULT_INSTRUCTION
from medrl.data.records import read_records
from medrl.evaluate.generate import generate, generate_vllm, resolve_engine, vllm_version
from medrl.models.load import load_model, load_processor
from medrl.models.sizes import qwen2_vl_2b_config
from medrl.models.tiny import _special_ids, _vision_token_ids, build_tiny, build_tokenizer
from medrl.rewards.basic import format_reward
from medrl.train.common import vision_dataset
from medrl.train.rollout import EXPANDED_PROMPTS, RolloutSettings, grpo_rollout_kwargs, resolve_rollout

PARTS = ("grpo-hf", "grpo-vllm", "eval-hf", "eval-vllm")
ARCHITECTURE = "Qwen2VLForConditionalGeneration"


@dataclass(frozen=True)
class Shape:
    """What one device does per optimizer step, and the model it does it with."""

    prompts_per_device: int = 2  # the preset's per_device_batch_size is 1 prompt; 2 x 8 completions per device
    generations: int = 8
    grad_accum: int = 2
    completion_tokens: int = 700
    min_pixels: int = 3136
    max_pixels: int = 401_408  # the paper's, for training, hf and vLLM alike
    image_size: int = 448  # synthetic images of 448 x 448: 256 image tokens, a typical PMC-VQA figure
    bf16: bool = True
    model: str = "2b"  # the 2B geometry; "tiny" on CPU
    cpu: bool = False

    @property
    def attn_implementation(self) -> str:
        if self.cpu:
            return "sdpa"
        import importlib.util

        return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"


GPU = Shape()
CPU = Shape(prompts_per_device=2, generations=2, completion_tokens=8, max_pixels=12_544, image_size=56, bf16=False,
            model="tiny", cpu=True)  # fmt: skip
NO_GPU = (
    "medrl.gpu_check measures GRPO and evaluation speed on a CUDA GPU, and no GPU is visible here "
    "(torch.cuda.is_available() is False): run `make gpu-check` on a GPU node"
)


def model_config(base=None):
    """Qwen2-VL-2B's geometry (its real vocabulary size) with the tiny tokenizer's special-token ids."""
    tokenizer = build_tokenizer()
    config = base or qwen2_vl_2b_config()
    config.update(_vision_token_ids(tokenizer))
    text = config.get_text_config()
    ids = _special_ids(tokenizer)
    text.eos_token_id, text.pad_token_id, text.bos_token_id = ids["<|im_end|>"], ids["<|endoftext|>"], None
    return config


def build_checkpoint(out: Path, config=None) -> Path:
    """Save a random-weight bf16 model of `config` (default: the 2B geometry) with the tiny model's processor."""
    import torch
    from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

    tiny = build_tiny("qwen2-vl", out.parent / "tiny-processor")
    config = model_config(config)
    torch.manual_seed(0)
    # transformers wraps `to` with functools.wraps, whose stub binds no self
    model = Qwen2VLForConditionalGeneration(config).to(torch.bfloat16)  # type: ignore[arg-type]
    text = config.get_text_config()
    model.generation_config.eos_token_id = text.eos_token_id
    model.generation_config.pad_token_id = text.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    AutoProcessor.from_pretrained(tiny).save_pretrained(out)
    return out


def agreement(a: list[str], b: list[str]) -> dict[str, float]:
    """How far two engines' greedy answers agree: the fraction identical, and the mean share of each answer
    (in characters) before the first difference. bf16 kernels differ, so long random-weight answers drift apart.

    >>> agreement(["abcd", "xy"], ["abcz", "xy"])
    {'identical': 0.5, 'common_prefix': 0.875}
    """
    same = sum(x == y for x, y in zip(a, b, strict=True))
    shares = []
    for x, y in zip(a, b, strict=True):
        n = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
        shares.append(n / max(len(x), len(y), 1))
    return {"identical": same / len(a), "common_prefix": sum(shares) / len(shares)}


def _memory() -> dict[str, float]:
    import torch

    if not torch.cuda.is_available():
        return {}
    free, total = torch.cuda.mem_get_info()
    return {
        "peak_allocated_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "device_used_gib_at_end": round((total - free) / 2**30, 2),
    }


def _model_cfg(shape: Shape):

    return ModelConfig(
        dtype="bfloat16" if shape.bf16 else "float32",
        min_pixels=shape.min_pixels,
        max_pixels=shape.max_pixels,
        attn_implementation=shape.attn_implementation,
    )


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_grpo(work: Path, rollout: str, steps: int, shape: Shape = GPU) -> dict[str, Any]:
    """`steps` optimizer steps of GRPO in `shape` on one device; the first step (compilation, allocator warm-up) is
    left out of the timing."""
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    cfg = load_config(text="arms: {g: {method: grpo}}")
    model_dir = str(work / "model")
    args = GRPOConfig(
        output_dir=str(work / f"grpo-{rollout}"),
        max_steps=steps,
        per_device_train_batch_size=shape.prompts_per_device * shape.generations,
        gradient_accumulation_steps=shape.grad_accum,
        num_generations=shape.generations,
        max_completion_length=shape.completion_tokens,
        learning_rate=1e-6,
        beta=0.04,
        temperature=1.0,
        bf16=shape.bf16,
        use_cpu=shape.cpu,
        gradient_checkpointing=True,
        loss_type="grpo",
        scale_rewards="group",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        log_completions=False,
        **grpo_rollout_kwargs(
            RolloutSettings(rollout), shape.completion_tokens, shape.max_pixels, architecture=ARCHITECTURE
        ),
    )
    rollouts = {"seconds": 0.0, "tokens": 0}

    class TimedGRPOTrainer(GRPOTrainer):
        """TRL's GRPOTrainer, its rollouts timed past the warm-up step."""

        def _generate_single_turn(self, *a, **k):
            _sync()
            start = time.perf_counter()
            out = super()._generate_single_turn(*a, **k)
            _sync()
            if self.state.global_step >= 1:  # past the warm-up step
                rollouts["seconds"] += time.perf_counter() - start
                # (completion_ids, logprobs); the logprobs are None on the hf path
                rollouts["tokens"] += sum(len(ids) for ids in out[0])
            return out

    trainer = TimedGRPOTrainer(
        model=load_model(model_dir, _model_cfg(shape)),
        # TRL types a reward's result list[float | None]; a list is invariant, so one that is never None is refused
        reward_funcs=[format_reward],  # type: ignore[list-item]
        args=args,
        train_dataset=vision_dataset(cfg, work / "data", "train"),
        processing_class=load_processor(model_dir, _model_cfg(shape)),
    )
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    trainer.add_callback(StepClock())
    trainer.train()
    timed_steps = len(ends) - 1
    return {
        "rollout": rollout,
        "completions_per_step": shape.prompts_per_device * shape.generations * shape.grad_accum,
        "steps_timed": timed_steps,
        "seconds_per_step": round((ends[-1] - ends[0]) / timed_steps, 2) if timed_steps else None,
        "rollout_tokens_per_s": round(rollouts["tokens"] / rollouts["seconds"], 1) if rollouts["seconds"] else None,
        **_memory(),
    }


def run_eval(work: Path, engine: str, questions: int, shape: Shape = GPU) -> dict[str, Any]:
    """Greedy answers to `questions` test questions (up to the shape's completion tokens), batch 8 for hf as the
    preset's evaluate.batch_size."""
    model_dir = str(work / "model")
    records = read_records(work / "data", "test")[:questions]
    processor = load_processor(model_dir, _model_cfg(shape))
    tokens = shape.completion_tokens
    start = time.perf_counter()
    if engine == "hf":
        model = load_model(model_dir, _model_cfg(shape)).to("cpu" if shape.cpu else "cuda")
        load_s = time.perf_counter() - start
        answers = list(generate(model, processor, records, work / "data", DEFAULT_INSTRUCTION, tokens, 8))
    else:
        stream = generate_vllm(
            model_dir, processor, records, work / "data", DEFAULT_INSTRUCTION, tokens, _model_cfg(shape)
        )
        first = next(stream)  # the engine starts on the first answer: its start-up is not generation time
        load_s = time.perf_counter() - start
        answers = [first, *stream]
    seconds = time.perf_counter() - start - load_s
    (work / f"answers-{engine}.json").write_text(json.dumps([a.text for a in answers]))
    return {
        "engine": engine,
        "questions": len(answers),
        "questions_per_s": round(len(answers) / seconds, 3),
        "engine_start_s": round(load_s, 1),
        **_memory(),
    }


def _part(
    work: Path, part: str, steps: int, questions: int, cpu: bool, timeout_s: float | None = None
) -> dict[str, Any]:
    """Run one part in a fresh process and return its JSON; a part still running after `timeout_s` is ended and
    reported as failed, so that the other parts still run within a machine's time limit."""
    cmd = [sys.executable, "-m", "medrl.gpu_check", "--part", part, "--work", str(work)]
    cmd += ["--steps", str(steps), "--questions", str(questions), *(["--cpu"] if cpu else [])]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        tail = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        return {"failed": f"still running after --part-timeout {timeout_s:g} s", "stderr_tail": tail[-2000:]}
    if done.returncode:
        return {"failed": f"exit {done.returncode}", "stderr_tail": done.stderr[-2000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medrl.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="GRPO steps per rollout engine (the first is warm-up)")
    parser.add_argument("--questions", type=int, default=64, help="test questions evaluated by each engine")
    parser.add_argument("--work", type=Path, default=None, help="folder for the checkpoint and data (default: temp)")
    parser.add_argument("--cpu", action="store_true", help="run the code path on CPU with the tiny model (tests)")
    parser.add_argument("--part-timeout", type=float, default=None, help="seconds one part may run (default: no limit)")
    parser.add_argument("--part", choices=PARTS, default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not opts.cpu:
        print(NO_GPU, file=sys.stderr)
        return 2
    shape = CPU if opts.cpu else GPU
    if opts.part:
        kind, engine = opts.part.split("-")
        if kind == "grpo":
            run = run_grpo(opts.work, engine, opts.steps, shape)
        else:
            run = run_eval(opts.work, engine, opts.questions, shape)
        print(json.dumps(run))
        return 0

    with tempfile.TemporaryDirectory(prefix="medrl-gpu-check-") as tmp:
        work = opts.work or Path(tmp)
        if shape.model == "tiny":
            build_tiny("qwen2-vl", work / "model")
        else:
            build_checkpoint(work / "model")
        prepare(
            DataConfig(source="synthetic", train_size=64, test_size=opts.questions, image_size=shape.image_size),
            work / "data",
        )
        device = "cpu" if shape.cpu else torch.cuda.get_device_name()
        result: dict[str, Any] = {"device": device, "torch": torch.__version__, "shape": asdict(shape),
                                  "attn_implementation": shape.attn_implementation}  # fmt: skip
        with_vllm = {
            "grpo": resolve_rollout("auto", cuda=not shape.cpu, architecture=ARCHITECTURE) == "vllm",
            "eval": resolve_engine("auto", cuda=not shape.cpu, architecture=ARCHITECTURE) == "vllm",
        }
        for part in PARTS:
            kind, engine = part.split("-")
            if engine == "vllm" and not with_vllm[kind]:
                result[part] = {"skipped": _why_no_vllm(kind, shape)}
                continue
            result[part] = _part(work, part, opts.steps, opts.questions, shape.cpu, opts.part_timeout)
            # Each part's figures as soon as it ends: a run cut off by a machine's time limit keeps those it has.
            print(f"gpu-check {part}: {json.dumps(result[part])}", file=sys.stderr, flush=True)
        if "questions" in result["eval-vllm"]:
            hf = json.loads((work / "answers-hf.json").read_text())
            result["eval-agreement"] = agreement(hf, json.loads((work / "answers-vllm.json").read_text()))
        print(json.dumps(result, indent=2))
    return 0


def _why_no_vllm(kind: str, shape: Shape) -> str:

    if shape.cpu:
        return "CPU run: vLLM needs a CUDA GPU"
    if kind == "grpo" and ARCHITECTURE in EXPANDED_PROMPTS:
        return "train.rollout=auto takes hf for Qwen2-VL under TRL 1.16 (vLLM would expand its image tokens twice)"
    if not vllm_version():
        return "vLLM is not installed here: hf half only"
    return "vLLM here is outside TRL's range or does not serve the model: hf half only"


if __name__ == "__main__":
    sys.exit(main())
