"""Configuration: every preset validates, overrides apply, mistakes name the setting and the fix."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from medrl import config
from medrl.config import ConfigError, build_config, config_from_text, dump_config, load_config, preset_names
from medrl.data.prep import SOURCES
from medrl.judge.base import BACKENDS
from medrl.rewards import REWARDS, capped_rewards
from medrl.train import METHODS


@pytest.mark.parametrize("name", preset_names())
def test_every_shipped_preset_validates(name):
    cfg = load_config(preset=name)
    assert cfg.arms
    assert config_from_text(dump_config(cfg)) == cfg  # what a run freezes reads back the same


def test_arms_inherit_train_defaults_and_keep_their_own():
    cfg = load_config(preset="demo")
    assert cfg.arms["sft"].per_device_batch_size == 16  # from train:
    assert cfg.arms["sft-grpo"].per_device_batch_size == 8  # the arm's own
    assert cfg.arms["zero-shot"].label == "Tiny Qwen2-VL (no fine-tuning)"


def test_overrides_reach_defaults_and_single_arms():
    cfg = load_config(preset="demo", overrides=["train.seed=7", "arms.sft.learning_rate=1e-4", "data.seed=3"])
    trained = [arm for arm in cfg.arms.values() if arm.method != "none"]
    assert len(trained) == 3 and {arm.seed for arm in trained} == {7}
    assert cfg.arms["sft"].learning_rate == 1e-4
    assert cfg.arms["sft-grpo"].learning_rate == 3e-4
    assert cfg.data.seed == 3


def test_override_values_are_yaml():
    cfg = load_config(preset="demo", overrides=["arms.sft-grpo.rewards=[{name: accuracy, weight: 2}]"])
    assert [(r.name, r.weight) for r in cfg.arms["sft-grpo"].rewards] == [("accuracy", 2.0)]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.learning_rat=1", "train.learning_rat"),
        ("arms.sft.learning_rate=fast", "arms.sft.learning_rate"),
        ("arms.sft.method=ppo", r"arms.sft.method: unknown method; choose one of: none, sft, lora, dpo, grpo, dr_grpo"),
        ("arms.sft-grpo.init=arm:nope", "arm 'nope' is not in this study"),
        ("arms.sft-grpo.rewards=[{name: vibes}]", "unknown reward 'vibes'"),
        ("model.min_pixels=999999", "model.min_pixels"),
        ("noequals", "must look like key.sub=value"),
        # a key of another method on an arm, named with the method it belongs to
        (
            "arms.sft.num_generations=4",
            "arms.sft.num_generations: not a setting of method sft; it belongs to method grpo",
        ),
        ("arms.sft.rewards=[{name: format}]", "arms.sft.rewards: not a setting of method sft"),
        ("arms.sft.dpo.beta=0.2", "arms.sft.dpo: not a setting of method sft; it belongs to method dpo"),
        ("arms.sft-grpo.lora.r=4", "arms.sft-grpo.lora: not a setting of method grpo; it belongs to method lora"),
        ("arms.zero-shot.learning_rate=1e-5", "arms.zero-shot.learning_rate: not a setting of method none"),
        # issue 30: transformers reads max_steps below 1 as unset and trains an epoch instead
        ("arms.sft.max_steps=0", r"arms.sft.max_steps: .*give 1 or more optimizer steps, or -1 to run `epochs`"),
        ("train.max_steps=-5", r"train.max_steps: .*give 1 or more optimizer steps, or -1 to run `epochs`"),
        # flash-attn refuses float32 tensors, which transformers hands it outside autocast (the hf evaluation engine)
        (
            "model.attn_implementation=flash_attention_2",
            r"arms\.\S+: attn_implementation flash_attention_2 needs "
            r"model\.dtype bfloat16 or float16 \(float32 now\)",
        ),
        ("arms.sft.attn_implementation=flash_attention_2", r"arms\.sft: attn_implementation flash_attention_2 needs"),
    ],
)
def test_bad_settings_name_the_setting(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(preset="demo", overrides=[override])


@pytest.mark.parametrize("steps", [-1, 1])
def test_max_steps_takes_a_count_or_minus_one_for_epochs(steps):
    assert load_config(preset="demo", overrides=[f"arms.sft.max_steps={steps}"]).arms["sft"].max_steps == steps


def test_unknown_preset_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="demo"):
        load_config(preset="nope")


def test_levels_order_arms_after_the_arm_they_start_from():
    cfg = load_config(preset="demo")
    assert cfg.levels() == [["zero-shot", "sft"], ["sft-grpo", "sft-drgrpo"]]


def test_cycles_are_rejected():
    raw = {"arms": {"a": {"method": "sft", "init": "arm:b"}, "b": {"method": "sft", "init": "arm:a"}}}
    with pytest.raises(ConfigError, match="cycle"):
        build_config(raw)


def test_selecting_arms_keeps_their_parents():
    cfg = load_config(preset="demo", arms=["sft-grpo"])
    assert list(cfg.arms) == ["sft", "sft-grpo"]
    with pytest.raises(ConfigError, match="unknown arm"):
        load_config(preset="demo", arms=["grpo-from-mars"])


def test_config_file(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("name: mine\narms:\n  base:\n    method: none\n")
    assert load_config(file=path).name == "mine"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(file=path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(file=tmp_path / "missing.yaml")


def test_train_defaults_reach_only_the_methods_they_apply_to():
    cfg = load_config(
        preset="demo",
        overrides=["train.max_completion_length=12", "train.lora.r=4", "train.dpo.beta=0.3", "train.seed=5"],
    )
    assert cfg.arms["sft-grpo"].max_completion_length == 12 and cfg.arms["sft-grpo"].seed == 5
    assert cfg.arms["sft"].seed == 5
    for skipped in ("max_completion_length", "lora", "dpo", "rewards"):
        assert not hasattr(cfg.arms["sft"], skipped)
    assert not hasattr(cfg.arms["zero-shot"], "seed")
    lora = load_config(preset="demo", overrides=["train.lora.r=4", "arms.sft.method=lora"]).arms["sft"]
    assert lora.lora.r == 4 and not hasattr(lora, "num_generations")
    with pytest.raises(ConfigError, match=r"train\.num_generations"):  # a default is still checked where it is set
        load_config(preset="demo", overrides=["train.num_generations=1"])


def test_dropped_model_arch_is_refused():
    with pytest.raises(ConfigError, match=r"model\.arch"):  # the tiny builder takes its arch from tiny:<arch>
        load_config(preset="demo", overrides=["model.arch=qwen2-vl"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("store=ftp://host/runs", "scheme 'ftp' is not supported"),
        ("store=s3:///runs", "no bucket"),
        ("experiment=../../etc", "experiment '../../etc'"),
        ("experiment=a/b", "experiment 'a/b'"),
    ],
)
def test_store_and_experiment_are_refused_at_configuration_time(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(preset="demo", overrides=[override])


def test_a_config_file_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "study.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=rf"config file {re.escape(str(bad))} is not UTF-8"):
        load_config(file=bad)


# ------------------------------------------------------------------------------- closed sets of names


def test_each_closed_set_of_names_is_what_its_feature_holds():
    """config declares the sources, rewards, methods and judge backends once and checks a config against them; each
    feature's own table must hold exactly those names, so a name added in one place only fails here."""
    assert list(config.DATA_SOURCES) == list(SOURCES)
    assert list(config.REWARD_NAMES) == list(REWARDS)
    assert list(config.CAPPED_REWARDS) == capped_rewards()
    assert set(config.ARM_CONFIGS) == {"none", *METHODS}
    assert list(config.JUDGE_BACKENDS) == list(BACKENDS)


def test_the_config_is_checked_without_importing_the_features():
    """Reading and checking a study loads neither the data sources, the rewards, the judges nor the trainers (their
    imports are heavy, and importing them from config made a cycle)."""
    overrides = ["data.source=slake", "judge={backend: hf, model: m}", "arms.grpo.rewards=[{name: cwr, cap: 9}]"]
    code = (
        f"import sys; from medrl.config import load_config; load_config(preset='paper-table1', overrides={overrides})"
        "; print(' '.join(sorted(m for m in sys.modules if m.startswith('medrl.'))))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "medrl.config" in loaded
    assert [m for m in loaded if m.split(".")[1] in ("data", "rewards", "judge", "train", "models")] == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.source=dicom-cloud", "data.source: Input should be 'synthetic', 'pmc-vqa', 'vqa-rad', 'path-vqa'"),
        (
            "arms.sft-grpo.rewards=[{name: brevity}]",
            "unknown reward 'brevity'; choose from: format, accuracy, semantic",
        ),
        (
            "arms.sft-grpo.rewards=[{name: 3}]",
            "arms.sft-grpo.rewards.0.name: Value error, unknown reward 3; choose from: format",
        ),
    ],
)
def test_a_name_outside_its_set_is_refused_with_the_set(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(preset="demo", overrides=[override])


def test_the_schema_lists_the_closed_sets():
    defs = config.StudyConfig.model_json_schema()["$defs"]
    assert defs["DataConfig"]["properties"]["source"]["enum"] == list(config.DATA_SOURCES)
    name = defs["RewardSpec"]["properties"]["name"]["anyOf"]
    assert name[0]["enum"] == list(config.REWARD_NAMES) and name[1]["pattern"] == f"^{config.CUSTOM_REWARD.pattern}$"


def _readme_names(header: str, *sections: str) -> set[str]:
    """The names in the first column of the README's tables headed `header`, under the given headings (`a`, `b`
    cells give both)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    names: set[str] = set()
    for block in re.split(r"\n(?=#{2,3} )", text):
        if not block.split("\n", 1)[0].lstrip("# ").startswith(sections):
            continue
        for table in re.findall(r"(?:^\|.*\n)+", block, re.MULTILINE):
            first = [row.split("|")[1].strip() for row in table.splitlines()]
            if first[0] == header:
                names |= {n for cell in first[2:] for n in re.findall(r"`([^`]+)`", cell) if ":" not in n}
    return names


def test_the_readme_tables_list_each_set():
    assert _readme_names("source", "Datasets", "Data sources") == set(config.DATA_SOURCES)
    assert _readme_names("name", "Rewards") == set(config.REWARD_NAMES)
    assert _readme_names("`backend`", "Judges") == set(config.JUDGE_BACKENDS)
