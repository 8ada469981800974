"""The semantic reward's account of a judge that gives no verdict: an unscored completion is None (never 0), the
unscorable share counts only the completions the judge was asked about, and a judge that answers none of them
stops training whatever judge.max_unscorable_fraction says."""

import pytest

from medrl.rewards.semantic import SemanticReward, UnscorableError, semantic_reward

WITH = "<think>A mass in the left lung.</think><answer>A</answer>"
WITHOUT = "<answer>B</answer>"  # no reasoning: 0 without asking the judge


class ScriptedJudge:
    """A stub judge (a 7B clinical model cannot run here) answering from a script, counting the prompts asked."""

    name = "scripted"
    proxy = True

    def __init__(self, verdicts, explanation=""):
        self.verdicts = list(verdicts)
        self.asked = 0
        self.explanation = explanation

    def yes_no(self, prompts):
        self.asked += len(prompts)
        return [self.verdicts.pop(0) for _ in prompts]

    def explain(self):
        return self.explanation


def test_an_unscored_completion_is_none_and_one_without_reasoning_is_zero():
    judge = ScriptedJudge([None, True, False])
    assert semantic_reward([WITH, WITHOUT, WITH, WITH], judge=judge) == [None, 0.0, 1.0, 0.0]
    assert judge.asked == 3


def test_completions_without_reasoning_do_not_dilute_the_unscorable_share():
    """2 of the 2 asked got no verdict; 6 more had no reasoning. Over all 8 that is 0.25, under the limit of 0.5:
    counted so, a dead judge would train on."""
    judge = ScriptedJudge([None, None], explanation="openai judge at http://judge:8000/v1 (judge.url): ...")
    with pytest.raises(UnscorableError, match=r"answered none of the 2 completions it was asked about") as err:
        SemanticReward(judge, max_unscorable_fraction=0.5)([WITH, WITH] + [WITHOUT] * 6)
    assert "http://judge:8000/v1 (judge.url)" in str(err.value)


def test_the_share_is_over_the_completions_asked():
    texts = [WITH] * 3 + [WITHOUT] * 5
    with pytest.raises(UnscorableError, match=r"2 of 3 completions it was asked about .*max_unscorable_fraction=0.5"):
        SemanticReward(ScriptedJudge([None, None, True]), max_unscorable_fraction=0.5)(texts)
    reward = SemanticReward(ScriptedJudge([None, True, False]), max_unscorable_fraction=0.5)
    assert reward(texts) == [None, 1.0, 0.0] + [0.0] * 5  # 1 of 3: under the limit, training goes on


def test_a_judge_that_answers_nothing_stops_training_even_at_fraction_one():
    with pytest.raises(UnscorableError, match="answered none of the 4 completions"):
        SemanticReward(ScriptedJudge([None] * 4), max_unscorable_fraction=1.0)([WITH] * 4)
    assert SemanticReward(ScriptedJudge([None] * 3 + [True]), max_unscorable_fraction=1.0)([WITH] * 4) == [
        None,
        None,
        None,
        1.0,
    ]


def test_nothing_to_ask_is_not_a_judge_failure():
    judge = ScriptedJudge([])
    assert SemanticReward(judge, max_unscorable_fraction=0.0)([WITHOUT] * 4) == [0.0] * 4
    assert judge.asked == 0


def test_a_judge_without_an_explanation_is_still_named_with_the_settings_to_check():
    with pytest.raises(UnscorableError, match=r"judge scripted answered none .*judge.backend / judge.model"):
        SemanticReward(ScriptedJudge([None]), max_unscorable_fraction=0.5)([WITH])
