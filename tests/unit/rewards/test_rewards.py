"""Table-driven tests of the rule-based rewards (TRL's contract: lists in, one float per completion out)."""

import pytest

from medrl.config import KeywordJudgeConfig, RewardSpec
from medrl.judge import KeywordJudge
from medrl.judge.templates import SEMANTIC_TEMPLATE, semantic_prompt
from medrl.rewards import (
    REWARDS,
    SemanticReward,
    UnscorableError,
    accuracy_reward,
    cwr_reward,
    ecr_reward,
    format_reward,
    reward_functions,
    semantic_reward,
)
from medrl.rewards.parse import chosen_option

CHOICES = ["Liver", "Lung", "Kidney", "Heart"]  # reference: Lung (B)

FORMAT_CASES = [
    ("<think>reasoning</think><answer>B</answer>", 1.0),
    ("  <think>a\nb</think>\n\n<answer>Lung</answer>\n", 1.0),
    ("<think></think><answer></answer>", 1.0),
    ("<answer>B</answer>", 0.0),  # no reasoning
    ("<answer>B</answer><think>late</think>", 0.0),  # wrong order
    ("<think>a</think><answer>B</answer><answer>C</answer>", 0.0),  # two answers
    ("<think>a</think><think>b</think><answer>B</answer>", 0.0),  # two thinks
    ("<think>a<answer>B</answer></think>", 0.0),  # nested
    ("Sure! <think>a</think><answer>B</answer>", 0.0),  # text before
    ("<think>a</think><answer>B</answer> thanks", 0.0),  # text after
    ("<think>a</think><answer>B", 0.0),  # unclosed
    ("", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), FORMAT_CASES)
def test_format_reward(text, expected):
    assert format_reward([text]) == [expected]
    assert format_reward([[{"role": "assistant", "content": text}]]) == [expected]


ACCURACY_CASES = [
    ("<answer>B</answer>", 1.0),
    ("<answer> B </answer>", 1.0),
    ("<answer>B:</answer>", 1.0),
    ("<answer>B)</answer>", 1.0),
    ("<answer>(B)</answer>", 1.0),
    ("<answer>B. Lung</answer>", 1.0),
    ("<answer>B: Lung</answer>", 1.0),
    ("<answer>lung</answer>", 1.0),
    ("<answer>  LUNG. </answer>", 1.0),
    ("<answer>A</answer><answer>B</answer>", 1.0),  # the last answer counts
    ("<answer>B</answer><answer>A</answer>", 0.0),
    ("<answer>A</answer>", 0.0),
    ("<answer>b</answer>", 0.0),  # a lowercase letter is text, and no option is "b"
    ("<answer>**B**</answer>", 1.0),  # markdown bold, as models often write it
    ("<answer>*B*</answer>", 1.0),
    ("<answer>__(B)__</answer>", 1.0),
    ("<answer>**B: Lung**</answer>", 1.0),
    ("<answer>***Lung***</answer>", 1.0),
    ("<answer>\uff22</answer>", 1.0),  # full-width B
    ("<answer>\uff08\uff22\uff09</answer>", 1.0),  # full-width (B)
    ("<answer>B\u200b</answer>", 1.0),  # a trailing zero-width space
    ("<answer>\ufeffL\u200dung</answer>", 1.0),  # invisible characters inside the text
    ("<answer>**b**</answer>", 0.0),  # bold does not make a lowercase letter a letter answer
    ("<answer>\uff42</answer>", 0.0),  # nor does full width
    ("<answer>**A**</answer>", 0.0),
    ("<answer>**B** or **A**</answer>", 0.0),  # emphasis inside the answer is not stripped
    ("<answer>**B**: Lung</answer>", 1.0),  # ... except around the leading letter
    ("<answer>**B.** Lung</answer>", 1.0),
    ("<answer>**B**: Liver</answer>", 0.0),  # the letter's text must still be its option's
    ("<answer>B: Liver</answer>", 0.0),  # letter and text disagree
    ("<answer>A, B</answer>", 0.0),  # several letters
    ("<answer>A and B</answer>", 0.0),
    ("<answer>E</answer>", 0.0),  # no such option
    ("<answer></answer>", 0.0),  # empty
    ("<answer>the lung</answer>", 0.0),  # text matching no option
    ("Lung", 0.0),  # no answer tag
    ("<think>B</think>", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), ACCURACY_CASES)
def test_accuracy_reward_closed(text, expected):
    assert accuracy_reward([text], answer=["Lung"], choices=[CHOICES]) == [expected]


OPEN_CASES = [
    ("<answer>yes</answer>", "Yes", 1.0),
    ("<answer>Yes.</answer>", "yes", 1.0),
    ("<answer>no</answer>", "yes", 0.0),
    ("<answer>left lung</answer>", "Left  lung", 1.0),
    ("<answer></answer>", "yes", 0.0),
]


@pytest.mark.parametrize(("text", "reference", "expected"), OPEN_CASES)
def test_accuracy_reward_open(text, reference, expected):
    assert accuracy_reward([text], answer=[reference], choices=[[]]) == [expected]
    assert accuracy_reward([text], answer=[reference]) == [expected]


def test_rewards_keep_batch_order_and_length():
    texts = ["<think>x</think><answer>A</answer>", "<answer>B</answer>", "nothing"]
    assert accuracy_reward(texts, answer=["Liver", "Lung", "Lung"], choices=[CHOICES] * 3) == [1.0, 1.0, 0.0]
    assert format_reward(texts) == [1.0, 0.0, 0.0]


def test_an_option_with_a_compatibility_character_matches_its_own_text_and_its_nfkc_form():
    """NFKC applies to the options too: "cm²" in an option is "cm2" once the answer is normalised, so the option's
    own text must still match it."""
    choices = ["2 cm\u00b2", "4 cm\u00b2"]
    for given in ("2 cm\u00b2", "2 cm2", "**2 cm\u00b2**"):
        assert accuracy_reward([f"<answer>{given}</answer>"], answer=[choices[0]], choices=[choices]) == [1.0]
    assert accuracy_reward(["<answer>4 cm2</answer>"], answer=[choices[0]], choices=[choices]) == [0.0]


def test_duplicate_option_texts_are_ambiguous():
    assert chosen_option("lung", ["lung", "Lung"]) is None


def test_every_reward_is_registered_by_config_name():
    assert REWARDS["format"] is format_reward
    assert REWARDS["accuracy"] is accuracy_reward
    assert REWARDS["semantic"] is semantic_reward
    assert REWARDS["ecr"] is ecr_reward
    assert REWARDS["cwr"] is cwr_reward


# ------------------------------------------------------------------------------------------ length rewards

ECR_CASES = [  # cap 4 words
    ("<think>one two</think><answer>B</answer>", 0.5),
    ("<think>one two three four</think><answer>B</answer>", 1.0),
    ("<think>" + "word " * 50 + "</think><answer>B</answer>", 1.0),  # capped: longer pays no more
    ("<think>one</think>", 0.25),  # no answer: length still counts (ECR looks at reasoning only)
    ("<think></think><answer>B</answer>", 0.0),
    ("<think>   \n\t </think><answer>B</answer>", 0.0),  # whitespace is not reasoning
    ("one two three four five <answer>B</answer>", 0.0),  # words outside <think> do not count
    ("<answer>one two three</answer>", 0.0),
    ("", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), ECR_CASES)
def test_ecr_reward(text, expected):
    assert ecr_reward([text], cap=4) == [expected]


def test_ecr_grows_with_reasoning_length_up_to_the_cap():
    values = ecr_reward([f"<think>{'w ' * n}</think><answer>B</answer>" for n in range(0, 12)], cap=8)
    assert values == sorted(values)
    assert values[0] == 0.0 and values[8:] == [1.0] * 4
    with pytest.raises(ValueError, match="cap"):
        ecr_reward(["<think>a</think>"], cap=0)


CWR_CASES = [  # cap 4 words; reference Lung (B)
    ("<think>one two</think><answer>B</answer>", 0.5),
    ("<think>one two three four five six</think><answer>Lung</answer>", 1.0),
    ("<think>one two</think><answer>A</answer>", 0.0),  # wrong: length earns nothing
    ("<think>" + "word " * 50 + "</think><answer>B: Liver</answer>", 0.0),  # long and ambiguous
    ("<think></think><answer>B</answer>", 0.0),  # right but no reasoning
    ("<think>one two</think><answer></answer>", 0.0),  # empty answer
    ("<think>one two</think>", 0.0),  # no answer
]


@pytest.mark.parametrize(("text", "expected"), CWR_CASES)
def test_cwr_reward(text, expected):
    assert cwr_reward([text], answer=["Lung"], choices=[CHOICES], cap=4) == [expected]


def test_cwr_on_open_questions():
    texts = ["<think>a b</think><answer>yes</answer>", "<think>a b</think><answer>no</answer>"]
    assert cwr_reward(texts, answer=["Yes", "Yes"], cap=2) == [1.0, 0.0]


# --------------------------------------------------------------------------------------- semantic reward


class ScriptedJudge:
    """A stub judge (a 7B clinical model cannot run here) answering from a script; records what it was asked."""

    name = "scripted"
    proxy = True

    def __init__(self, verdicts):
        self.verdicts = list(verdicts)
        self.prompts: list[str] = []

    def yes_no(self, prompts):
        self.prompts.extend(prompts)
        return [self.verdicts.pop(0) for _ in prompts]

    def score(self, prompts):
        return [None for _ in prompts]


SEMANTIC_CASES = [  # the keyword judge says Yes when the reasoning names a medical term
    ("<think>A round mass in the upper left lung.</think><answer>A</answer>", 1.0),
    ("<think>I like turtles.</think><answer>A</answer>", 0.0),
    ("<think></think><answer>lung</answer>", 0.0),  # no reasoning: 0 without asking
    ("The lung. <answer>A</answer>", 0.0),  # medical words outside <think> are not judged
    ("<think>nothing here >>> lung</think><answer>A</answer>", 1.0),  # delimiters cannot hide text
    ("", 0.0),
]


@pytest.mark.parametrize(("text", "expected"), SEMANTIC_CASES)
def test_semantic_reward_with_the_keyword_judge(text, expected):
    assert semantic_reward([text], judge=KeywordJudge()) == [expected]
    assert semantic_reward([[{"role": "assistant", "content": text}]], judge=KeywordJudge()) == [expected]


def test_semantic_reward_judges_the_reasoning_with_the_paper_template():
    judge = ScriptedJudge([True, False, None])
    texts = [
        "<think>Mass in the lung.</think><answer>A</answer>",
        "<think>Bad reasoning.</think><answer>B</answer>",
        "<answer>C</answer>",
        "<think>Unclear {braces}.</think><answer>D</answer>",
    ]
    assert semantic_reward(texts, judge=judge) == [1.0, 0.0, 0.0, None]  # Yes, No, not asked, unscorable
    assert len(judge.prompts) == 3
    assert judge.prompts[0] == semantic_prompt("Mass in the lung.")
    assert judge.prompts[2].splitlines()[2] == "Given Statement: <<<Unclear {braces}.>>>"
    assert "Answer 'Yes' if the statement is medically coherent and accurate, or 'No' otherwise." in SEMANTIC_TEMPLATE
    assert "<answer>" not in "".join(judge.prompts)  # only the reasoning is judged


def test_too_many_unscorable_completions_stop_training():
    texts = ["<think>lung</think><answer>A</answer>"] * 4
    reward = SemanticReward(ScriptedJudge([None, None, True, False]), max_unscorable_fraction=0.5)
    assert reward(texts) == [None, None, 1.0, 0.0]  # 2 of 4 missing: at the limit, training goes on
    reward = SemanticReward(ScriptedJudge([None, None, None, False]), max_unscorable_fraction=0.5)
    with pytest.raises(UnscorableError, match=r"3 of 4 completions .* judge.max_unscorable_fraction=0.5"):
        reward(texts)


def test_factory_binds_settings_and_names_each_reward_for_trl():
    specs = [RewardSpec(name=n) for n in ("format", "accuracy", "semantic")]
    specs += [RewardSpec(name="ecr", cap=2), RewardSpec(name="cwr")]
    funcs = reward_functions(specs, KeywordJudgeConfig())
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "semantic", "ecr", "cwr"]
    text = "<think>" + "lung " * 300 + "</think><answer>B</answer>"
    columns = {"answer": ["Lung"], "choices": [CHOICES], "id": ["x"], "trainer_state": None}
    values = [f(completions=[text], prompts=["p"], completion_ids=[[1]], **columns)[0] for f in funcs]
    assert values == [1.0, 1.0, 1.0, 1.0, 1.0]  # ECR capped at 2 words; CWR at the default cap of 256
    short = "<think>lung lung</think><answer>B</answer>"
    assert funcs[4](completions=[short], **columns) == [2 / 256]
    assert funcs[3](completions=[short], **columns) == [1.0]


# Options whose text starts like a letter prefix, and options told apart only by a sign: each row was scored
# wrong (or, for HER2, right) by the reward before; lenient accuracy already read them correctly.
OPTION_TEXT_CASES = [
    (["E. coli", "S. aureus", "K. pneumoniae"], "E. coli", "<answer>E. coli</answer>", 1.0),  # E: no such option
    (["C. difficile", "B. fragilis", "E. coli"], "C. difficile", "<answer>C. difficile</answer>", 1.0),  # C is E. coli
    (["C. difficile", "B. fragilis", "E. coli"], "C. difficile", "<answer>A. C. difficile</answer>", 1.0),
    (["C. difficile", "B. fragilis", "E. coli"], "C. difficile", "<answer>C</answer>", 0.0),
    (["HER2+", "HER2-"], "HER2+", "<answer>B</answer>", 0.0),  # was 1.0: "her2" == "her2" once signs were gone
    (["HER2+", "HER2-"], "HER2+", "<answer>HER2-</answer>", 0.0),
    (["HER2+", "HER2-"], "HER2+", "<answer>HER2+</answer>", 1.0),  # was 0.0: "ambiguous"
    (["HER2+", "HER2-"], "HER2+", "<answer>B: HER2+</answer>", 0.0),  # letter and text disagree
    (["HER2+", "HER2-"], "HER2+", "<answer>A: HER2+</answer>", 1.0),
    (["HER2+", "HER2-"], "HER2+", "<answer>her2</answer>", 0.0),  # names neither
]


@pytest.mark.parametrize(("choices", "reference", "text", "expected"), OPTION_TEXT_CASES)
def test_option_texts_that_look_like_letters_or_differ_by_a_sign(choices, reference, text, expected):
    assert accuracy_reward([text], answer=[reference], choices=[choices]) == [expected]
