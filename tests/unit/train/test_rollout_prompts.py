"""The prompts TRL 1.16 would hand a colocated vLLM in GRPO, built on CPU with TRL's own tokenisation
(`GRPOTrainer._tokenize_prompts`, called on a stand-in trainer that carries only what that method reads) and each tiny
model's real processor at the training pixel limits: for one image the ids already hold one pad token per image
feature, where vLLM expects the single placeholder the chat template writes. vLLM 0.30 replaces that one placeholder
per image with the full run, so it would expand the run again (TRL issues 6294, 6401); hence rollout=auto picks hf
for these architectures and rollout=vllm is refused.

vLLM 0.30's own input processor cannot be built here: its Qwen2-VL processor needs a vLLM ModelConfig, which inspects
the model class in a subprocess that imports vLLM's compiled kernels (CUDA-only wheel). With MEDRL_VLLM_WHEEL set to
the wheel, the last test reads from vLLM's model code that each architecture's replacement targets one token."""

from __future__ import annotations

import os
import re
import zipfile
from types import SimpleNamespace

import pytest
from PIL import Image

from medrl.config import ConfigError, ModelConfig
from medrl.evaluate.generate import model_architecture
from medrl.models.load import load_processor
from medrl.models.tiny import ARCHS, build_tiny
from medrl.train.rollout import EXPANDED_PROMPTS, RolloutSettings, grpo_rollout_kwargs, resolve_rollout

PIXELS = ModelConfig(min_pixels=3136, max_pixels=16384)  # the arm's limits: training and rollouts must agree


@pytest.fixture(scope="module", params=sorted(ARCHS))
def tiny(request, tmp_path_factory):
    folder = build_tiny(request.param, tmp_path_factory.mktemp(request.param))
    return request.param, folder, load_processor(str(folder), PIXELS)


def _trl_prompt_ids(processor, image: Image.Image) -> tuple[list[int], dict]:
    """What GRPOTrainer hands vLLM for one row: TRL's own _tokenize_prompts over the conversational prompt with the
    image in it (the form TRL gives the row, medrl's vision_dataset: prompt + image column)."""
    from trl import GRPOTrainer
    from trl.data_utils import prepare_multimodal_messages

    prompt = prepare_multimodal_messages(
        [{"role": "user", "content": "Which side is the lesion on? A. left B. right"}], images=[image]
    )
    trainer = SimpleNamespace(  # a stand-in: only the attributes _tokenize_prompts reads
        processing_class=processor, _is_vlm=True, environment_factories=None, tools=None, chat_template=None,
        chat_template_kwargs={},
    )  # fmt: skip
    ids, images, fields = GRPOTrainer._tokenize_prompts(trainer, [prompt])
    assert images == [[image]]  # TRL passes the raw image beside the ids: vLLM processes it itself
    return list(ids[0]), fields


def _image_token_id(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids(processor.image_token)


def _qwen_features(processor, fields: dict) -> int:
    """How many image features a Qwen-VL computes for the image (the run vLLM inserts per image): its patch grid
    over the merge window, from the processor's own output for the row."""
    return int(fields["image_grid_thw"][0].prod()) // processor.image_processor.merge_size**2


def test_trl_hands_vllm_prompt_ids_with_the_image_already_expanded(tiny):
    arch, folder, processor = tiny
    image = Image.new("RGB", (128, 96), (90, 90, 90))
    ids, fields = _trl_prompt_ids(processor, image)
    pads = ids.count(_image_token_id(processor))
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert text.count(processor.image_token) == 1  # what vLLM expects: one placeholder per image
    if arch.startswith("qwen"):
        assert pads == _qwen_features(processor, fields) > 1
    else:  # LLaVA: one pad per vision-tower patch
        assert pads > 1
    # so this architecture is one medrl keeps away from vLLM rollouts
    assert model_architecture(str(folder)) in EXPANDED_PROMPTS


def test_rollout_auto_takes_hf_for_these_models_and_vllm_is_refused_with_the_reason(tiny):
    _, folder, _ = tiny
    architecture = model_architecture(str(folder))
    # stand-in: a CUDA machine with the GPU lock's vLLM 0.30.0
    assert resolve_rollout("auto", cuda=True, vllm="0.30.0", architecture=architecture) == "hf"
    kwargs = grpo_rollout_kwargs(
        RolloutSettings("auto"), 700, PIXELS.max_pixels, cuda=True, vllm="0.30.0", architecture=architecture
    )
    assert kwargs == {"use_vllm": False}
    with pytest.raises(ConfigError, match=r"train\.rollout=vllm: not for .*6294, 6401.*set train\.rollout=hf"):
        resolve_rollout("vllm", cuda=True, vllm="0.30.0", architecture=architecture)


def test_another_architecture_still_gets_vllm_on_a_gpu():
    # stand-in: a CUDA machine with vLLM 0.30.0; an architecture whose prompt ids TRL does not expand
    assert resolve_rollout("auto", cuda=True, vllm="0.30.0", architecture="Gemma3ForCausalLM") == "vllm"


VLLM_TARGETS = {  # the model file of vLLM 0.30 and the single-token target of its image prompt replacement
    "qwen2_vl.py": r"target=\[placeholder\[modality\]\]",
    "qwen3_vl.py": r'modality="image",\s*target=\[hf_processor\.image_token_id\]',
    "llava.py": r"target=\[image_token_id\]",
}


def test_vllm_replaces_one_placeholder_token_per_image():
    wheel = os.environ.get("MEDRL_VLLM_WHEEL")
    if not wheel:
        pytest.skip("no vLLM wheel here: set MEDRL_VLLM_WHEEL to read vLLM's model code")
    with zipfile.ZipFile(wheel) as whl:
        for name, target in VLLM_TARGETS.items():
            source = whl.read(f"vllm/model_executor/models/{name}").decode()
            assert re.search(target, source), name


def test_a_study_asking_vllm_rollouts_for_qwen_vl_is_refused_at_init(tmp_path):
    from medrl.study import init_run

    model = build_tiny("qwen2-vl", tmp_path / "qwen2-vl")
    overrides = [f"model.base={model}", "arms.sft-grpo.rollout=vllm"]
    with pytest.raises(ConfigError, match=r"arms\.sft-grpo\.rollout=vllm: not for Qwen2VLForConditionalGeneration"):
        init_run(preset="demo", overrides=overrides, store_uri=str(tmp_path / "store"), run_id="r1")
    assert not (tmp_path / "store").exists()
