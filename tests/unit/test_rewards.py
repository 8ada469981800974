"""Table-driven tests of the rule-based rewards (TRL's contract: lists in, one float per completion out)."""

import pytest

from medrl.rewards import REWARDS, accuracy_reward, format_reward
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


def test_duplicate_option_texts_are_ambiguous():
    assert chosen_option("lung", ["lung", "Lung"]) is None


def test_every_reward_is_registered_by_config_name():
    assert REWARDS["format"] is format_reward
    assert REWARDS["accuracy"] is accuracy_reward
