"""Training set-up without training: config keys of the methods, DPO pair building, checkpoint discovery, the
shipped DeepSpeed / accelerate configs, LoRA targets, and the paper-table1 preset."""

import json
import os
from pathlib import Path

import pytest

from medrl.config import ConfigError, DpoConfig, load_config
from medrl.data.records import Record
from medrl.store.checkpoints import commit_local, is_complete, latest_checkpoint
from medrl.train.common import vision_dataset
from medrl.train.dpo import preference_dataset
from medrl.train.pairs import answer_index, preference_pairs
from tests.support.medvqa_fixtures import image_bytes

# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("arms.sft-grpo.rewards=[{name: format, cap: 10}]", "`cap` applies to the length rewards"),
        ("arms.sft-grpo.rewards=[{name: ecr, cap: 0}]", "arms.sft-grpo.rewards.0.cap"),
        ("arms.sft-grpo.rewards=[{name: accuracy}, {name: accuracy}]", "accuracy listed twice"),
        ("arms.sft.deepspeed=zero9", "deepspeed=zero9: give zero2"),
        ("arms.sft.method=dpo & arms.sft.dpo.rejected=some", "arms.sft.dpo.rejected"),
        ("arms.sft.method=lora & arms.sft.lora.rank=8", "arms.sft.lora.rank"),
    ],
)
def test_bad_training_settings_name_the_setting(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="demo", overrides=override.split(" & "))


def test_every_method_is_a_config_value():
    """zero-shot sets no key of any method, so it can take each one."""
    for method in ("none", "sft", "lora", "dpo", "grpo", "dr_grpo"):
        arm = load_config(preset="demo", overrides=[f"arms.zero-shot.method={method}"]).arms["zero-shot"]
        assert arm.method == method
        assert type(arm).__name__ == {"dr_grpo": "GrpoArm"}.get(method, f"{method.capitalize()}Arm")


# ------------------------------------------------------------------------------------------- DPO pairs

RECORDS = [
    Record(
        id="r1",
        question="q",
        choices=["liver", "lung", "heart", "kidney"],
        answer="lung",
        answer_label="B",
        meta={"rationale": "It is in the chest."},
    ),
    Record(id="r2", question="q", choices=[], answer="yes"),  # open question
    Record(id="r3", question="q", choices=["liver", "lung"], answer="brain"),  # answer is no option
    Record(id="r4", question="q", choices=["Left", "Right"], answer="right"),
]


def test_pairs_one_wrong_option_per_question():
    rows, counts = preference_pairs(RECORDS, DpoConfig(), seed=0)
    assert counts == {"pairs": 2, "open_question": 1, "answer_not_an_option": 1}
    assert [row["record"] for row in rows] == [0, 3]
    first = rows[0]
    assert first["chosen"] == "<think>It is in the chest.</think><answer>lung</answer>"
    wrong = first["rejected"].removeprefix("<think>It is in the chest.</think><answer>").removesuffix("</answer>")
    assert wrong in {"liver", "heart", "kidney"}
    assert rows[1] == {
        "record": 3,
        "chosen": "<think></think><answer>Right</answer>",
        "rejected": "<think></think><answer>Left</answer>",
    }


def test_pairs_every_wrong_option_in_each_answer_form():
    rows, _ = preference_pairs(RECORDS[:1], DpoConfig(rejected="all", answer="letter", reasoning="empty"), 0)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("<think></think><answer>B</answer>", "<think></think><answer>A</answer>"),
        ("<think></think><answer>B</answer>", "<think></think><answer>C</answer>"),
        ("<think></think><answer>B</answer>", "<think></think><answer>D</answer>"),
    ]
    rows, _ = preference_pairs(RECORDS[:1], DpoConfig(rejected="all", answer="letter_text"), 0)
    assert rows[0]["chosen"].endswith("<answer>B: lung</answer>")
    assert {r["rejected"][-len("<answer>A: liver</answer>") :] for r in rows} >= {"<answer>A: liver</answer>"}


def test_the_chosen_answer_is_right_and_the_rejected_one_wrong_by_the_accuracy_reward():
    from medrl.rewards import accuracy_reward, format_reward

    for form in ("text", "letter", "letter_text"):
        rows, _ = preference_pairs(RECORDS, DpoConfig(rejected="all", answer=form), seed=0)
        recs = [RECORDS[r["record"]] for r in rows]
        answers, choices = [r.answer for r in recs], [r.choices for r in recs]
        assert accuracy_reward([r["chosen"] for r in rows], answer=answers, choices=choices) == [1.0] * len(rows)
        assert accuracy_reward([r["rejected"] for r in rows], answer=answers, choices=choices) == [0.0] * len(rows)
        assert format_reward([r["chosen"] for r in rows] + [r["rejected"] for r in rows]) == [1.0] * 2 * len(rows)


def test_the_drawn_wrong_option_depends_on_seed_and_id_not_on_order():
    many = [Record(id=f"q{i}", question="q", choices=list("abcdefgh"), answer="a") for i in range(40)]
    forward, _ = preference_pairs(many, DpoConfig(), seed=0)
    backward, _ = preference_pairs(many[::-1], DpoConfig(), seed=0)
    assert [r["rejected"] for r in forward] == [r["rejected"] for r in backward][::-1]
    other, _ = preference_pairs(many, DpoConfig(), seed=1)
    assert [r["rejected"] for r in other] != [r["rejected"] for r in forward]
    assert len({r["rejected"] for r in forward}) > 3  # not always the same wrong option


def test_answer_index_by_text_then_letter():
    assert answer_index(Record(id="1", question="q", choices=["a", "b"], answer="B.")) == 1
    assert answer_index(Record(id="1", question="q", choices=["x", "y"], answer="zzz", answer_label="B")) == 1
    assert answer_index(Record(id="1", question="q", choices=["x", "y"], answer="zzz", answer_label="C")) is None


# ----------------------------------------------------------------------------------------- checkpoints


def _checkpoint(root: Path, step: int, commit: bool = True) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w" * step)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if commit:
        commit_local(path)
    return path


def test_latest_checkpoint_is_the_newest_committed_one(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 100)
    _checkpoint(tmp_path, 300)
    _checkpoint(tmp_path, 400, commit=False)  # a crash during the save
    (tmp_path / "checkpoint-x").mkdir()
    (tmp_path / "other-500").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-300"  # 300 > 100 numerically, 400 incomplete


def test_a_damaged_checkpoint_is_not_complete(tmp_path):
    good = _checkpoint(tmp_path, 2)
    assert is_complete(good) and is_complete(good, verify=True)
    (good / "model.safetensors").write_bytes(b"x" * 2)  # same size, other bytes: only sha256 notices
    assert is_complete(good) and not is_complete(good, verify=True)
    assert latest_checkpoint(tmp_path, verify=True) is None
    (good / "trainer_state.json").unlink()
    assert not is_complete(good)
    newer = _checkpoint(tmp_path, 4)
    (newer / "COMMITTED").write_text("0" * 64 + "\n")
    assert not is_complete(newer)


# ------------------------------------------------------------------------------- DeepSpeed / accelerate


def test_zero2_config_ships_and_is_valid(tmp_path):
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from medrl.train.common import config_file, deepspeed_file

    path = deepspeed_file("zero2")
    assert path == config_file("zero2.json") and path.is_file()
    ds = HfTrainerDeepSpeedConfig(str(path))
    assert ds.is_zero2() and not ds.is_offload()
    raw = json.loads(path.read_text())
    assert raw["bf16"]["enabled"] == "auto"  # follows train.bf16 (on in paper-table1)
    with pytest.raises(ConfigError, match="no such file"):
        deepspeed_file(str(tmp_path / "nope.json"))


def test_a_zero3_config_that_cannot_save_whole_weights_is_refused_before_training(tmp_path):
    """Without stage3_gather_16bit_weights_on_model_save, accelerate's plugin (read here from the same file) has
    zero3_save_16bit_model off and Trainer.save_model leaves no weights file: the arm would fail only at its commit."""
    from accelerate.utils import DeepSpeedPlugin

    from medrl.train.common import deepspeed_file

    zero3 = {"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True}}
    bad = tmp_path / "zero3.json"
    bad.write_text(json.dumps(zero3))
    assert not DeepSpeedPlugin(hf_ds_config=str(bad)).zero3_save_16bit_model
    with pytest.raises(ConfigError, match="stage3_gather_16bit_weights_on_model_save: true"):
        deepspeed_file(str(bad))
    zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    good = tmp_path / "zero3-gather.json"
    good.write_text(json.dumps(zero3))
    assert DeepSpeedPlugin(hf_ds_config=str(good)).zero3_save_16bit_model
    assert deepspeed_file(str(good)) == good


def test_accelerate_config_ships_and_loads():
    from accelerate.commands.config.config_args import load_config_from_file

    from medrl.train.common import config_file

    cfg = load_config_from_file(str(config_file("accelerate-zero2.yaml")))
    assert cfg.distributed_type == "DEEPSPEED" and cfg.mixed_precision == "bf16"
    assert cfg.deepspeed_config["zero_stage"] == 2 and cfg.deepspeed_config["offload_optimizer_device"] == "none"


def test_deepspeed_setting_reaches_training_arguments(tmp_path):
    """DeepSpeed cannot run ZeRO on this CPU machine: this checks that the arm's `deepspeed` is loaded into the
    TrainingArguments the trainers get, with the batch settings filled in."""
    from trl import GRPOConfig

    from medrl.train.common import trainer_args

    arm = load_config(preset="paper-table1").arms["grpo"]
    env = dict(os.environ)
    args = GRPOConfig(**trainer_args(arm, tmp_path, 8), num_generations=8)
    assert dict(os.environ) == env  # nothing process-wide changed for the tests that follow
    assert args.deepspeed.endswith("medrl/train/configs/zero2.json")
    ds = args.hf_deepspeed_config.config
    assert ds["zero_optimization"]["stage"] == 2
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["bf16"]["enabled"]) == (
        8,
        2,
        True,
    )
    no_ds = load_config(preset="demo").arms["sft"]
    assert "deepspeed" not in trainer_args(no_ds, tmp_path, 8)


# ------------------------------------------------------------------------------------------------ LoRA


def test_lora_targets_follow_freeze_vision():
    import re

    from medrl.train.sft import lora_config

    names = [
        "model.language_model.layers.0.self_attn.q_proj",
        "model.language_model.layers.1.self_attn.o_proj",
        "model.language_model.layers.0.mlp.up_proj",
        "model.visual.blocks.0.attn.qkv",
        "model.visual.blocks.0.attn.proj",
        "model.visual.merger.mlp.0",
        "model.visual.patch_embed.proj",
    ]
    frozen = load_config(preset="demo", overrides=["arms.sft.method=lora"])
    pattern = lora_config(frozen, "sft").target_modules
    assert [n for n in names if re.fullmatch(pattern, n)] == names[:2]
    trained = load_config(preset="demo", overrides=["arms.sft.method=lora", "arms.sft.lora.freeze_vision=false"])
    pattern = lora_config(trained, "sft").target_modules
    assert [n for n in names if re.fullmatch(pattern, n)] == names[:2] + names[3:5]


# ------------------------------------------------------------------------------------- the paper preset


def test_paper_preset_holds_every_arm_of_table1_with_appendix_a_settings():
    cfg = load_config(preset="paper-table1")
    methods = {name: arm.method for name, arm in cfg.arms.items()}
    assert methods == {
        "zero-shot": "none",
        "sft-lora": "lora",
        "sft-full": "sft",
        "dpo": "dpo",
        "grpo-scratch": "grpo",
        "grpo": "grpo",
        "grpo-semantic": "grpo",
        "grpo-semantic-ecr": "grpo",
        "grpo-semantic-cwr": "grpo",
        "dr-grpo": "dr_grpo",
        "llava-7b": "none",
        "llama-vision-11b": "none",
    }
    assert cfg.arms["llava-7b"].model == "llava-hf/llava-1.5-7b-hf"
    llama = cfg.for_arm("llama-vision-11b")  # Mllama has no flash-attention 2: its row loads with sdpa
    assert llama.arms["llama-vision-11b"].model == "meta-llama/Llama-3.2-11B-Vision-Instruct"
    assert llama.model.attn_implementation == "sdpa"
    rewards = {name: [r.name for r in arm.rewards] for name, arm in cfg.arms.items() if hasattr(arm, "rewards")}
    assert set(rewards) == {n for n, m in methods.items() if m in ("grpo", "dr_grpo")}
    assert rewards["grpo"] == rewards["dr-grpo"] == rewards["grpo-scratch"] == ["format", "accuracy"]
    assert rewards["grpo-semantic"] == ["format", "accuracy", "semantic"]
    assert rewards["grpo-semantic-ecr"] == ["format", "accuracy", "semantic", "ecr"]
    assert rewards["grpo-semantic-cwr"] == ["format", "accuracy", "semantic", "cwr"]
    trained = {name: arm for name, arm in cfg.arms.items() if arm.method != "none"}
    assert len(trained) == 9
    for name, arm in trained.items():
        assert (arm.learning_rate, arm.max_steps, arm.per_device_batch_size, arm.grad_accum) == (1e-6, 1500, 1, 2)
        assert arm.bf16 and arm.deepspeed == "zero2" and arm.save_steps == 100, name
        assert arm.model == ("Qwen/Qwen2-VL-2B" if name == "grpo-scratch" else None)
        if arm.method in ("grpo", "dr_grpo"):
            assert (arm.temperature, arm.max_completion_length, arm.num_generations, arm.beta) == (1.0, 700, 8, 0.04)
        else:  # the train: block's GRPO settings are not inherited where they mean nothing
            assert not hasattr(arm, "num_generations") and not hasattr(arm, "rewards"), name
    assert cfg.model.base == "Qwen/Qwen2-VL-2B-Instruct" and cfg.model.attn_implementation == "flash_attention_2"
    assert cfg.model.max_pixels == 401_408 and cfg.model.dtype == "bfloat16"
    assert cfg.judge.backend == "openai" and "BioMistral" in (cfg.judge.model or "")


def test_arms_start_from_the_instruct_model_the_base_model_or_another_arm():
    from medrl import study
    from medrl.store.layout import RunLayout

    cfg = load_config(
        preset="paper-table1",
        overrides=["arms.grpo-after-sft.method=grpo", "arms.grpo-after-sft.init=arm:sft-full"],
    )
    run = RunLayout("file:///runs/paper-table1/r1")
    assert study.init_of(run, cfg, "grpo") == "Qwen/Qwen2-VL-2B-Instruct"
    assert study.init_of(run, cfg, "grpo-scratch") == "Qwen/Qwen2-VL-2B"  # "from scratch": the base model
    assert study.init_of(run, cfg, "grpo-after-sft") == run.arm("sft-full").model
    assert cfg.levels() == [[n for n in cfg.arms if n != "grpo-after-sft"], ["grpo-after-sft"]]


def test_rollout_vllm_without_cuda_stops_before_any_model_or_data_is_read(tmp_path):
    """Issue 12: rollout=vllm on a CPU machine is refused by the GRPO recipe, naming the setting and the fix."""
    from medrl.train import grpo

    cfg = load_config(preset="demo", overrides=["arms.sft-grpo.rollout=vllm"])
    with pytest.raises(ConfigError, match=r"train.rollout=vllm.*(CUDA|vLLM)"):
        grpo.recipe(cfg, "sft-grpo", tmp_path / "no-data", "no-model")


def test_paper_preset_states_its_rollout_and_engine():
    cfg = load_config(preset="paper-table1")
    assert cfg.evaluate.engine == "auto"
    assert {
        (a.rollout, a.vllm_gpu_memory_utilization) for a in cfg.arms.values() if a.method in ("grpo", "dr_grpo")
    } == {("auto", None)}  # vLLM's share derived from the arm's KV cache (train/memory.py)


def test_a_vllm_engine_that_cannot_start_is_a_final_error_naming_the_cause(
    monkeypatch, tiny_model, synthetic_data, tmp_path
):
    """TRL starts the colocated vLLM engine in GRPOTrainer's constructor; the failure becomes EngineStartError, which
    train-arm ends with exit 1 instead of a restart. A stand-in trainer raises what vLLM would (no GPU here)."""
    from medrl import train
    from medrl.train import grpo
    from medrl.train.common import Recipe
    from medrl.train.rollout import EngineStartError

    class EngineFails:
        def __init__(self, **kwargs):
            raise ValueError("Free memory on device (3.1/79.2 GiB) is less than desired GPU memory utilization")

    def recipe(cfg, arm, data_dir, init_ref):
        rows = [{}] * 64  # enough for a step: the train split is checked before the engine starts
        return Recipe(lambda **kw: kw, EngineFails, rows, 1, config_kwargs={"use_vllm": True})

    monkeypatch.setattr(grpo, "recipe", recipe)
    cfg = load_config(preset="demo", overrides=[f"model.base={tiny_model}"])
    with pytest.raises(EngineStartError, match=r"arms\.sft-grpo: the colocated vLLM engine did not start \(ValueError: "
                       r"Free memory.*vllm_gpu_memory_utilization.*rollout=hf"):  # fmt: skip
        train.train_arm(cfg, "sft-grpo", synthetic_data, str(tiny_model), tmp_path / "out", tmp_path / "work")


# ---------------------------------------------------------------------------------------------- images


def test_a_question_with_several_images_is_refused_for_training_not_cut_to_its_first(tmp_path):
    """The record format allows a list of images and evaluation shows the model all of them; training fed only
    the first, so a model was tested on pictures it never trained with."""
    (tmp_path / "images").mkdir()
    for i in range(3):
        (tmp_path / "images" / f"{i}.png").write_bytes(image_bytes(i, "PNG"))
    base = {"question": "Which side?", "choices": ["left", "right"], "answer": "left", "answer_label": "A"}
    rows = [
        {**base, "id": "one", "image": "images/0.png"},
        {**base, "id": "two", "image": ["images/1.png", "images/2.png"]},
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text("")
    cfg = load_config(preset="demo", overrides=["arms.sft.method=dpo"])
    with pytest.raises(ConfigError, match=r"row 2 of the train split has 2 images; training takes one image"):
        vision_dataset(cfg, tmp_path, "train")
    with pytest.raises(ConfigError, match=r"row 2 of the train split has 2 images"):
        preference_dataset(cfg, "sft", tmp_path)
    (tmp_path / "train.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert vision_dataset(cfg, tmp_path, "train")[0]["image"].size == (64, 48)  # one image: as before


def test_one_process_without_a_launcher_becomes_a_world_of_one():
    """DeepSpeed needs torchrun's five variables (else MPI discovery, and mpi4py is not installed); a single-GPU
    PyTorchJob's operator sets four of them, not LOCAL_RANK."""
    from medrl.train.common import one_rank_env

    env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "x-master-0", "MASTER_PORT": "23456"}
    one_rank_env(env)
    assert {k: env[k] for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR")} == {
        "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"
    }  # fmt: skip
    assert 0 < int(env["MASTER_PORT"]) < 65536
    launched = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "m", "MASTER_PORT": "1"}
    one_rank_env(launched)  # a rank torchrun started: left as it is
    assert launched == {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "m", "MASTER_PORT": "1"}
    with pytest.raises(ConfigError, match="WORLD_SIZE=4 but no LOCAL_RANK"):
        one_rank_env({"WORLD_SIZE": "4"})
