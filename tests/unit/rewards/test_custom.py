"""A reward of the user's own by dotted path (`rewards: [{name: "mypkg.rewards:brevity"}]`): the config checks the
form without importing anything, the arm's rewards import it from an installed module, and each way it can be wrong
is named with the fix."""

import pytest

from medrl import store, study
from medrl.config import ConfigError, KeywordJudgeConfig, RewardSpec
from medrl.rewards import reward_functions
from medrl.study import arm as arm_steps

BREVITY = "tests.support.custom_rewards:brevity"


def test_a_custom_reward_is_loaded_by_its_dotted_path_and_named_in_logs():
    (reward,) = reward_functions([RewardSpec(name=BREVITY)], KeywordJudgeConfig())
    assert reward.__name__ == BREVITY
    assert reward(["short answer", " ".join(["word"] * 25)]) == [1.0, 0.0]


def test_the_config_checks_the_form_without_importing():
    assert RewardSpec(name="not_installed_pkg.rewards:brevity").name == "not_installed_pkg.rewards:brevity"
    for bad in ("mypkg.rewards:", ":brevity", "my pkg:f", "/tmp/rewards.py:f", "mypkg.rewards:f:g"):
        with pytest.raises(ValueError, match=r"give your own reward as module\.path:function"):
            RewardSpec(name=bad)
    with pytest.raises(ValueError, match=r"or a function of an installed module as module\.path:function"):
        RewardSpec(name="brevity")
    with pytest.raises(ValueError, match="`cap` applies to the length rewards only"):
        RewardSpec(name=BREVITY, cap=10)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("not_installed_pkg.rewards:brevity", r"module not_installed_pkg.rewards cannot be imported .*install the"),
        ("tests.support.custom_rewards:missing", "module tests.support.custom_rewards has no function missing"),
        ("tests.support.custom_rewards:NOT_A_FUNCTION", "has no function NOT_A_FUNCTION"),
        ("tests.support.custom_rewards:no_kwargs", r"no_kwargs must take \(completions, \*\*kwargs\)"),
        ("tests.support.custom_rewards:texts_first", r"texts_first must take \(completions, \*\*kwargs\)"),
        ("os.path:join", r"join must take \(completions, \*\*kwargs\)"),
        ("builtins:len", r"len must take \(completions, \*\*kwargs\)"),
        ("tests.support.custom_reward_broken:f", r"fails on import \(RuntimeError: the reward module's own bug\)"),
    ],
)
def test_a_custom_reward_that_cannot_be_used_is_named_with_the_fix(name, message):
    with pytest.raises(ConfigError, match=message):
        reward_functions([RewardSpec(name=name)], KeywordJudgeConfig())


def test_a_custom_reward_gets_trls_arguments_by_name():
    (reward,) = reward_functions([RewardSpec(name="tests.support.custom_rewards:in_trl_order")], KeywordJudgeConfig())
    assert reward(prompts=["a long prompt", "p"], completions=["short", "a longer completion"]) == [0.0, 1.0]


@pytest.mark.parametrize(("name", "got"), [("one_value", "1 values for 2 completions"), ("words", "")])
def test_what_a_custom_reward_returns_is_checked(name, got):
    (reward,) = reward_functions([RewardSpec(name=f"tests.support.custom_rewards:{name}")], KeywordJudgeConfig())
    with pytest.raises(ValueError, match=f"{got}.*must return a list of one float \\(or None\\) per completion"):
        reward(["a", "b"])


def test_a_bad_custom_reward_stops_the_studys_first_training_step(tmp_path, tiny_model):
    """The GRPO arm's reward cannot be imported: the SFT it starts from fails at once, naming the arm and the fix,
    before an hour of SFT, and commits nothing."""
    bad = "tests.support.custom_reward_broken:f"
    run = study.init_run(
        preset="demo",
        overrides=[f"model.base={tiny_model}", f'arms.sft-grpo.rewards=[{{name: format}}, {{name: "{bad}"}}]'],
        store_uri=str(tmp_path / "store"),
        arms=["sft", "sft-grpo"],
    )
    with pytest.raises(ConfigError, match=r"arm sft-grpo: reward tests\.support\.custom_reward_broken:f: .*fix it"):
        arm_steps.train_in_run(run, "sft")
    assert not store.exists(study.RunLayout(run).arm("sft").model)
