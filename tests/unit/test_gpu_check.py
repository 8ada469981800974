"""make gpu-check without a GPU: a clear refusal and a non-zero exit; its whole code path on CPU (`--cpu`: the tiny
model, a few tokens and steps, through the same parts, processes and JSON); its model builder and agreement measure
(a cut-down geometry stands in for the 2B one, which would take ~9 GB of memory here)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medrl.gpu_check import _part, agreement, build_checkpoint, main, model_config

ROOT = Path(__file__).resolve().parents[2]


def test_cpu_machine_exits_with_a_clear_message(tmp_path, monkeypatch, capsys):
    # In this process (`python -m medrl.gpu_check` is `sys.exit(main())`; the --cpu test below runs that module as a
    # process): a new interpreter would spend seconds importing torch and TRL to print one line.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what CUDA_VISIBLE_DEVICES="" gives
    assert main(["--work", str(tmp_path)]) == 2
    done = capsys.readouterr()
    assert "no GPU is visible here" in done.err and "make gpu-check` on a GPU node" in done.err
    assert done.out == "" and not any(tmp_path.iterdir())  # refused before building anything


@pytest.mark.slow  # about a minute: two part processes, each loading torch and TRL
def test_the_whole_code_path_runs_on_cpu_and_prints_its_json(tmp_path, monkeypatch, capsys):
    import json

    # The parts run as `python -m medrl.gpu_check --part ...` processes, as on a GPU; the top level runs in this
    # process, which has torch and TRL imported already (a third interpreter would spend seconds importing them).
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["--cpu", "--steps", "2", "--questions", "4", "--work", str(tmp_path)]) == 0
    done = capsys.readouterr()
    stdout = done.out
    result = json.loads(stdout[stdout.index("{\n") :])  # the JSON object ends the output
    # Each part's figures also go to stderr as it ends, so a run cut off by a time limit keeps them.
    progress = [line for line in done.err.splitlines() if line.startswith("gpu-check ")]
    assert [line.split(":")[0] for line in progress] == ["gpu-check grpo-hf", "gpu-check eval-hf"]
    assert json.loads(progress[0].split(": ", 1)[1]) == result["grpo-hf"]
    grpo = result["grpo-hf"]
    assert "failed" not in grpo, grpo.get("stderr_tail")
    assert grpo["steps_timed"] == 1 and grpo["rollout_tokens_per_s"] > 0  # the hf path's (ids, None) is counted
    assert grpo["completions_per_step"] == 2 * 2 * 2  # prompts x generations x gradient accumulation
    assert result["eval-hf"]["questions"] == 4
    assert result["grpo-vllm"] == {"skipped": "CPU run: vLLM needs a CUDA GPU"}
    assert result["shape"]["grad_accum"] == 2 and result["attn_implementation"] == "sdpa"


def test_the_gpu_shape_is_the_presets():
    from medrl.config import load_config
    from medrl.gpu_check import GPU

    cfg = load_config(preset="paper-table1")
    grpo = cfg.arms["grpo"]
    assert (GPU.generations, GPU.grad_accum, GPU.completion_tokens) == (
        grpo.num_generations, grpo.grad_accum, grpo.max_completion_length
    )  # fmt: skip
    assert (GPU.min_pixels, GPU.max_pixels, GPU.bf16) == (cfg.model.min_pixels, cfg.model.max_pixels, True)


def test_the_2b_geometry_keeps_its_size_and_takes_the_tokenizer_s_ids():
    from medrl.models.sizes import QWEN2_VL_2B
    from medrl.models.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    config = model_config()
    text = config.get_text_config()
    assert (text.hidden_size, text.num_hidden_layers, config.vision_config.depth) == (1536, 28, 32)
    assert text.vocab_size == QWEN2_VL_2B["text_config"]["vocab_size"] == 151_936  # the real logits' size
    assert len(tokenizer) < text.vocab_size
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert text.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


@pytest.mark.slow  # about a minute: the 2B geometry's widths, one layer each
def test_checkpoint_saves_bf16_and_answers_an_image_question(tmp_path):
    import torch
    from transformers import Qwen2VLConfig

    from medrl.config import ModelConfig
    from medrl.models.load import load_model, load_processor
    from medrl.models.sizes import QWEN2_VL_2B

    geometry = {**QWEN2_VL_2B, "text_config": {**QWEN2_VL_2B["text_config"], "num_hidden_layers": 1}}
    small = Qwen2VLConfig(**{**geometry, "vision_config": {**QWEN2_VL_2B["vision_config"], "depth": 1}})
    out = build_checkpoint(tmp_path / "model", small)
    model = load_model(str(out), ModelConfig(dtype="bfloat16"))
    processor = load_processor(str(out), ModelConfig(max_pixels=200_704))
    assert next(model.parameters()).dtype == torch.bfloat16
    image_token = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.image_token_id == image_token
    from PIL import Image

    from medrl.data.records import Record
    from medrl.evaluate.generate import chat_text

    image = Image.new("RGB", (448, 448), "white")
    text = chat_text(processor, Record(id="1", question="Which side?", answer="left"), "", [image])
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    assert int((inputs["input_ids"] == image_token).sum()) == 256  # a 448 x 448 image at the paper's max_pixels
    out_ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert (
        out_ids.shape[1] == inputs["input_ids"].shape[1] + 3 or out_ids[0, -1] == model.config.text_config.eos_token_id
    )


def test_agreement_counts_identical_answers_and_shared_prefixes():
    assert agreement(["same", "abcd"], ["same", "abXX"]) == {"identical": 0.5, "common_prefix": 0.75}
    assert agreement(["", "a"], ["", "b"]) == {"identical": 0.5, "common_prefix": 0.0}


def test_a_part_past_its_time_limit_is_ended_and_reported(tmp_path, monkeypatch):
    # The real part process, given less time than importing torch takes: ended, not waited for.
    monkeypatch.setenv("PYTHONPATH", f"{ROOT / 'src'}:{ROOT}")
    out = _part(tmp_path, "grpo-hf", 1, 1, cpu=True, timeout_s=0.5)
    assert out["failed"] == "still running after --part-timeout 0.5 s" and "stderr_tail" in out
