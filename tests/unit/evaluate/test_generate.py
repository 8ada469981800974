"""evaluate.engine: which engine `auto | hf | vllm` resolves to, the errors before any model is loaded, and the
prompts each engine is given. The GPU and vLLM are absent here: where a test needs them present, it passes
`cuda=True` / a vLLM version to resolve_engine as a stand-in for that machine, and says so."""

from __future__ import annotations

import ast
import dataclasses
import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from medrl.config import ConfigError, ModelConfig
from medrl.data.records import read_records
from medrl.evaluate.generate import (
    chat_text,
    generate,
    generate_vllm,
    generate_with,
    resolve_engine,
    vllm_completion,
    vllm_prompts,
    vllm_version,
)
from medrl.models.load import load_model, load_processor
from tests.support.truncation import plan_cutoff


def test_this_cpu_machine_resolves_auto_to_hf_and_refuses_vllm():
    assert vllm_version() is None  # the CPU environment has no vLLM (it is CUDA-only)
    assert resolve_engine("auto") == "hf"
    assert resolve_engine("hf") == "hf"
    with pytest.raises(ConfigError, match=r"evaluate\.engine=vllm needs a CUDA GPU.*evaluate\.engine=hf"):
        resolve_engine("vllm")


def test_gpu_without_vllm_names_the_package_and_the_fix():
    # stand-in: a CUDA machine (cuda=True) without vLLM
    with pytest.raises(ConfigError, match=r"train\.rollout=vllm needs the vllm package.*requirements-gpu\.lock"):
        resolve_engine("vllm", "train.rollout", cuda=True, vllm=None)
    assert resolve_engine("auto", cuda=True, vllm=None) == "hf"


def test_gpu_with_vllm_takes_vllm():
    # stand-in: a CUDA machine with vLLM 0.30.0 installed
    assert resolve_engine("vllm", cuda=True, vllm="0.30.0") == "vllm"
    assert resolve_engine("auto", cuda=True, vllm="0.30.0") == "vllm"
    assert resolve_engine("auto", cuda=False, vllm="0.30.0") == "hf"


def test_unknown_engine_is_named():
    with pytest.raises(ConfigError, match=r"evaluate\.engine='sglang': unknown; choose one of auto, hf, vllm"):
        resolve_engine("sglang")


def test_vllm_refused_before_the_model_is_touched(tmp_path):
    records = []
    missing = str(tmp_path / "no-such-model")  # loading it would raise OSError, not ConfigError
    with pytest.raises(ConfigError, match=r"evaluate\.engine=vllm"):
        generate_with("vllm", missing, ModelConfig(), None, records, tmp_path, "", 8, 1)


@pytest.fixture(scope="module")
def tiny(tiny_model, synthetic_data):
    records = read_records(synthetic_data, "test")[:4]
    return load_processor(str(tiny_model), ModelConfig()), records


def test_hf_engine_through_generate_with_gives_generate_s_answers(tiny, tiny_model, synthetic_data):
    processor, records = tiny
    direct = list(
        generate(load_model(str(tiny_model), ModelConfig()), processor, records, synthetic_data, "Think.", 6, 2)
    )
    routed = list(
        generate_with("auto", str(tiny_model), ModelConfig(), processor, records, synthetic_data, "Think.", 6, 2)
    )
    assert routed == direct and len(direct) == len(records)


def test_the_hf_engine_generates_on_the_gpu_when_there_is_one(tiny, tiny_model, synthetic_data, monkeypatch):
    """from_pretrained loads onto the CPU: the hf engine (the paper's Llama-3.2-Vision row, which vLLM 0.30 cannot
    load) generated on the CPU of a GPU node. Stand-in for the GPU: torch's `meta` device, a device that is not the
    CPU and exists here; generation itself is left out (nothing computes on meta)."""
    import medrl.evaluate.generate as gen

    processor, records = tiny
    assert gen.generation_device() == "cpu"  # this machine
    monkeypatch.setattr(gen, "generation_device", lambda: "meta")
    seen = []
    monkeypatch.setattr(gen, "generate", lambda model, *args: seen.append(model) or iter(()))
    generate_with("hf", str(tiny_model), ModelConfig(), processor, records, synthetic_data, "Think.", 6, 2)
    assert {p.device.type for p in seen[0].parameters()} == {"meta"}


def test_vllm_prompts_are_the_hf_prompt_text_with_the_decoded_image(tiny, synthetic_data):
    processor, records = tiny
    prompts = vllm_prompts(processor, records, synthetic_data, "Think.")
    assert len(prompts) == len(records)
    for rec, prompt in zip(records, prompts, strict=True):
        image = prompt["multi_modal_data"]["image"]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        with Image.open(Path(synthetic_data) / rec.images[0]) as original:
            assert image.size == original.size
        assert prompt["prompt"] == chat_text(processor, rec, "Think.", [image])
        # one unexpanded placeholder per image: vLLM expands it to the image's patch count itself
        assert prompt["prompt"].count("<|image_pad|>") == 1
        assert prompt["prompt"].rstrip().endswith("<|im_start|>assistant")


def test_hf_engine_flags_the_answers_cut_at_the_token_limit(tiny, tiny_model, synthetic_data):
    """One left-padded batch (prompts of different lengths): answers that end early and are padded while the
    others go on, one whose EOS is its last allowed token, and ones cut at the limit; the EOS ids are a list."""
    processor, records = tiny
    model = load_model(str(tiny_model), ModelConfig())
    cut = plan_cutoff(model, processor, records, synthetic_data, "Think.")
    assert len(set(cut.prompt_lengths)) > 1  # the batch is padded
    model.generation_config.eos_token_id = cut.eos
    answers = list(generate(model, processor, records, synthetic_data, "Think.", cut.limit, len(records)))
    assert [a.truncated for a in answers] == cut.truncated  # observed: [False, False, True, False]
    assert [a.text for a in answers] == cut.texts


def test_hf_engine_without_an_eos_token_cuts_every_answer(tiny, tiny_model, synthetic_data):
    processor, records = tiny
    model = load_model(str(tiny_model), ModelConfig())
    model.generation_config.eos_token_id = None  # nothing to stop at: every answer runs to the limit
    answers = list(generate(model, processor, records, synthetic_data, "Think.", 3, 2))
    assert [a.truncated for a in answers] == [True] * len(records)


# Stand-ins for vLLM 0.30's output classes (no vLLM on CPU), with the fields and names of its vllm/outputs.py:
# CompletionOutput is a dataclass; RequestOutput's constructor takes these, in this order.
@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int] | None
    prompt_logprobs: None
    outputs: list[CompletionOutput]
    finished: bool


def test_the_stand_ins_have_vllm_s_own_fields():
    """Against the GPU lock's vLLM wheel (MEDRL_VLLM_WHEEL): CompletionOutput's fields in order, RequestOutput's
    first constructor arguments, and "length" among the finish reasons."""
    wheel = os.environ.get("MEDRL_VLLM_WHEEL")
    if not wheel:
        pytest.skip("no vLLM wheel here: set MEDRL_VLLM_WHEEL to read vLLM's vllm/outputs.py")
    with zipfile.ZipFile(wheel) as whl:
        tree = ast.parse(whl.read("vllm/outputs.py").decode())
        reasons = whl.read("vllm/v1/engine/__init__.py").decode()
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    fields = [n.target.id for n in classes["CompletionOutput"].body if isinstance(n, ast.AnnAssign)]
    ours = [f.name for f in dataclasses.fields(CompletionOutput)]
    assert fields[:5] == ours[:5] and set(ours) <= set(fields)
    init = next(n for n in classes["RequestOutput"].body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    assert [a.arg for a in init.args.args[1:7]] == [f.name for f in dataclasses.fields(RequestOutput)]
    assert re.search(r'FINISH_REASON_STRINGS = \([^)]*"length"', reasons)


def _request(text: str, tokens: int, finish_reason: str, stop_reason=None) -> RequestOutput:
    done = CompletionOutput(0, text, list(range(tokens)), None, None, finish_reason, stop_reason)
    return RequestOutput("0", "prompt", [1, 2], None, [done], True)


def test_vllm_answer_is_cut_when_its_finish_reason_is_length():
    assert vllm_completion(_request("<think>a b", 8, "length")) == ("<think>a b", True)
    # an EOS as the last allowed token: as many tokens as the limit, but it ended
    assert vllm_completion(_request("<answer>A</answer>", 8, "stop")) == ("<answer>A</answer>", False)
    assert vllm_completion(_request("<answer>B</answer>", 3, "stop", "</answer>")).truncated is False


def test_vllm_engine_passes_the_limit_and_yields_each_answer_s_flag(tiny, synthetic_data, monkeypatch):
    """generate_vllm against a stand-in `vllm` module (no vLLM on CPU): LLM and SamplingParams take what the engine
    is given; its answers come back as RequestOutputs with vLLM's field names."""
    processor, records = tiny
    seen: dict = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class LLM:
        def __init__(self, **kwargs):
            seen["llm"] = kwargs

        def get_default_sampling_params(self):
            return SamplingParams(repetition_penalty=1.05)

        def generate(self, prompts, params, use_tqdm=True):
            seen["params"] = params
            reasons = ["length" if i % 2 else "stop" for i in range(len(prompts))]
            return [_request(f"answer {i}", 5, r) for i, r in enumerate(reasons)]

    monkeypatch.setitem(sys.modules, "vllm", SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    answers = list(generate_vllm("model", processor, records, synthetic_data, "Think.", 700, ModelConfig()))
    assert seen["params"].max_tokens == 700
    assert answers == [(f"answer {i}", bool(i % 2)) for i in range(len(records))]
