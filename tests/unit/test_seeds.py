"""Several training seeds per study (`seeds`, `--seeds`, the pipeline's `seeds`): validation and the run layout."""

from __future__ import annotations

import pytest

from medrl.config import ConfigError, config_from_text, dump_config, load_config, seed_list
from medrl.kfp.parameters import parameter_overrides


def test_one_run_per_arm_stays_the_default():
    cfg = load_config(preset="demo")
    assert cfg.seeds is None and cfg.with_seeds() is cfg


def test_every_trained_arm_runs_once_per_seed_from_the_same_seeds_parent():
    cfg = load_config(preset="demo", overrides=["seeds=[0, 1, 2]"]).with_seeds()
    groups = cfg.seed_groups()
    assert groups["zero-shot"] == ["zero-shot"]  # nothing trained: evaluated once
    assert groups["sft-grpo"] == ["sft-grpo-seed0", "sft-grpo-seed1", "sft-grpo-seed2"]
    for seed in (0, 1, 2):
        arm = cfg.arms[f"sft-grpo-seed{seed}"]
        assert arm.seed == seed and arm.init == f"arm:sft-seed{seed}" and arm.seed_of == "sft-grpo"
        assert arm.label == "SFT -> GRPO"
    assert cfg.levels()[0] == ["zero-shot", "sft-seed0", "sft-seed1", "sft-seed2"]  # seeds train side by side
    # a frozen run's config is read back as it is, not expanded again
    frozen = config_from_text(dump_config(cfg))
    assert list(frozen.with_seeds().arms) == list(cfg.arms)


def test_one_seed_sets_every_trained_arms_seed():
    cfg = load_config(preset="demo", overrides=["seeds=[7]"]).with_seeds()
    assert list(cfg.arms) == ["zero-shot", "sft", "sft-grpo", "sft-drgrpo"]
    assert {cfg.arms[a].seed for a in ("sft", "sft-grpo", "sft-drgrpo")} == {7}


@pytest.mark.parametrize(
    ("seeds", "message"), [("[]", "seeds: give at least one seed"), ("[0, 1, 1]", "seeds [0, 1, 1]: 1 repeated")]
)
def test_an_empty_or_repeated_seed_list_is_refused(seeds, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(preset="demo", overrides=[f"seeds={seeds}"])


def test_seed_flag_and_pipeline_parameter():
    assert seed_list("3") == [0, 1, 2] and seed_list("4,9") == [4, 9] and seed_list(" ") is None
    for bad in ("0", "a,b", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            seed_list(bad)
    assert parameter_overrides(preset="demo", seeds="3") == ["seeds=[0, 1, 2]"]
    assert parameter_overrides(preset="demo", seeds="") == []
    with pytest.raises(ConfigError, match=r"seeds \[0, 0\]: 0 repeated"):
        load_config(preset="demo", overrides=parameter_overrides(preset="demo", seeds="0,0"))
    # steps with seeds: the arms named in the study, which the seeds then repeat
    out = parameter_overrides(preset="demo", arms="sft", steps=3, seeds="2")
    assert out == ["seeds=[0, 1]", "arms.sft.max_steps=3"]
