"""Evaluation speed: batched greedy generation on the tiny Qwen2-VL model must have at least 3x the throughput
(questions per second) of generating one question at a time. Run with `make bench`."""

import time

from medrl.config import DataConfig, ModelConfig
from medrl.data.prep import prepare
from medrl.data.records import read_records
from medrl.evaluate.generate import generate
from medrl.models.load import load_model, load_processor

N = 64
MAX_NEW_TOKENS = 40


def test_batched_generation_has_3x_the_throughput(tiny_model, tmp_path):
    data = tmp_path / "data"
    prepare(DataConfig(source="synthetic", train_size=8, test_size=N, seed=1), data)
    records = read_records(data, "test")[:N]
    model_cfg = ModelConfig(base=str(tiny_model), min_pixels=3136, max_pixels=3136)
    processor, model = load_processor(str(tiny_model), model_cfg), load_model(str(tiny_model), model_cfg)
    instruction = "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."

    def run(batch_size: int) -> float:
        start = time.perf_counter()
        out = list(generate(model, processor, records, data, instruction, MAX_NEW_TOKENS, batch_size))
        assert len(out) == N
        return N / (time.perf_counter() - start)

    run(8)  # warm-up: first calls pay for lazy initialisation
    single, batched = run(1), run(32)
    ratio = batched / single
    print(f"\ngeneration, {N} questions x {MAX_NEW_TOKENS} tokens: one at a time {single:.1f} q/s, "
          f"batches of 32 {batched:.1f} q/s -> {ratio:.1f}x (goal >= 3x)")  # fmt: skip
    assert ratio >= 3
