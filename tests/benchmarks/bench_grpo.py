"""GRPO step time through medrl against a plain TRL script on the same tiny configuration, interleaved in one
process (medrl, TRL, medrl, TRL, ...) so that machine load hits both alike. Goal: medrl / TRL <= 1.05.

    make bench        (or: python -m pytest tests/benchmarks/bench_grpo.py -s)
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

STEPS = 20
ROUNDS = 3
SETTINGS = {"lr": 1e-5, "prompts": 2, "generations": 8, "completion": 40, "beta": 0.04}


def medrl_step_time(model: Path, data: Path, work: Path) -> tuple[float, list[float]]:
    from medrl.config import load_config
    from medrl.train import train_arm

    s = SETTINGS
    cfg = load_config(
        text=f"""
arms:
  a: {{method: grpo, learning_rate: {s["lr"]}, max_steps: {STEPS}, per_device_batch_size: {s["prompts"]},
       grad_accum: 1, num_generations: {s["generations"]}, max_completion_length: {s["completion"]},
       temperature: 1.0, beta: {s["beta"]}, save_steps: 1000, seed: 0}}
"""
    )
    train_arm(cfg, "a", data, str(model), work / "out", work)
    rows = [json.loads(line) for line in (work / "train_log.jsonl").read_text().splitlines()]
    lengths = [r["completions/mean_length"] for r in rows if "completions/mean_length" in r]
    return next(r["train_runtime"] for r in rows if "train_runtime" in r) / STEPS, lengths


def trl_step_time(model: Path, data: Path, work: Path) -> tuple[float, list[float]]:
    """What a user would write with TRL alone: load, build the dataset, GRPOTrainer, train."""
    import torch
    from datasets import Dataset, Image
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    from medrl.data.prompt import prompt_messages
    from medrl.data.records import read_records
    from medrl.rewards import accuracy_reward, format_reward

    s = SETTINGS
    rows = [
        {"prompt": prompt_messages(r), "image": str(data / r.images[0]), "answer": r.answer, "choices": r.choices}
        for r in read_records(data, "train")
    ]
    dataset = Dataset.from_list(rows).cast_column("image", Image())
    processor = AutoProcessor.from_pretrained(model, min_pixels=3136, max_pixels=3136)
    processor.tokenizer.padding_side = "left"
    args = GRPOConfig(
        output_dir=str(work / "checkpoints"),
        learning_rate=s["lr"],
        max_steps=STEPS,
        per_device_train_batch_size=s["prompts"] * s["generations"],
        gradient_accumulation_steps=1,
        num_generations=s["generations"],
        max_completion_length=s["completion"],
        temperature=1.0,
        beta=s["beta"],
        loss_type="grpo",
        scale_rewards="group",
        save_steps=1000,
        logging_steps=1,  # as medrl logs: every step
        seed=0,
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        log_completions=False,
    )
    trainer = GRPOTrainer(
        model=AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32),
        reward_funcs=[format_reward, accuracy_reward],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    runtime = trainer.train().metrics["train_runtime"]
    key = "completions/mean_length"
    return runtime / STEPS, [r[key] for r in trainer.state.log_history if key in r]


def test_grpo_step_time_against_plain_trl(tiny_model, tmp_path):
    from medrl.config import DataConfig
    from medrl.data.prep import prepare

    data = tmp_path / "data"
    prepare(DataConfig(source="synthetic", train_size=256, test_size=16, seed=0), data)
    times: dict[str, list[float]] = {"medrl": [], "trl": []}
    lengths: dict[str, list[float]] = {}
    for i in range(ROUNDS):
        for name, run in (("medrl", medrl_step_time), ("trl", trl_step_time)):
            start = time.perf_counter()
            step_time, lengths[name] = run(tiny_model, data, tmp_path / f"{name}-{i}")
            times[name].append(step_time)
            print(f"round {i} {name}: {step_time:.3f} s/step ({time.perf_counter() - start:.0f} s in all)")
    medrl, trl = statistics.median(times["medrl"]), statistics.median(times["trl"])
    print(
        f"\nGRPO step time, tiny Qwen2-VL, {SETTINGS['prompts']} prompts x {SETTINGS['generations']} generations x "
        f"{SETTINGS['completion']} tokens, {STEPS} steps, median of {ROUNDS} interleaved rounds:\n"
        f"  medrl {medrl:.3f} s/step   plain TRL {trl:.3f} s/step   ratio {medrl / trl:.3f} (goal <= 1.05)"
    )
    # the same work on both sides: same seed, so the same sampled completions step by step
    assert len(lengths["medrl"]) == STEPS and lengths["medrl"] == lengths["trl"]
    assert medrl / trl <= 1.05, f"medrl's GRPO step is {medrl / trl:.2f}x plain TRL's (goal <= 1.05)"
