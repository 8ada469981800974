"""Accuracy three ways (the reward's rule, strict letter, lenient text), closed and open questions apart, and the
statistics of Table 1: mean (± std), bootstrap interval, McNemar."""

import pytest

from medrl.data.records import Record
from medrl.evaluate.accuracy import answer_type, judge_answer
from medrl.evaluate.stats import bootstrap_ci, mcnemar, summarize

CLOSED = Record(id="c", question="Where?", choices=["upper left", "upper right", "lower left"], answer="upper right",
                answer_label="B")  # fmt: skip
OPEN = Record(id="o", question="Which organ?", answer="left lung")
SIGNED = Record(id="s", question="Receptor status?", choices=["HER2+", "HER2-"], answer="HER2+", answer_label="A")
GERMS = Record(id="g", question="Which organism?", choices=["E. coli", "S. aureus"], answer="E. coli", answer_label="A")


@pytest.mark.parametrize(
    ("record", "answer", "correct", "strict", "lenient"),
    [
        (CLOSED, "B", True, True, True),
        (CLOSED, "(B)", True, True, True),
        (CLOSED, "B.", True, True, True),
        (CLOSED, "upper right", True, False, True),
        (CLOSED, "Upper-Right.", True, False, True),
        (CLOSED, "B: upper right", True, False, True),
        (CLOSED, "The lesion is in the upper right.", False, False, True),
        (CLOSED, "upper right or upper left", False, False, False),
        (CLOSED, "A", False, False, False),
        (CLOSED, "B: upper left", False, False, False),
        (CLOSED, "D", False, False, False),
        (CLOSED, "", False, False, False),
        (CLOSED, "**B**", True, True, True),  # the reward's rule (medrl.rewards.parse): bold is not content
        (CLOSED, "\uff22", True, True, True),  # full-width B
        (CLOSED, "B\u200b", True, True, True),  # a trailing zero-width space
        (CLOSED, "**upper right**", True, False, True),
        (CLOSED, "**b**", False, False, False),  # a lowercase letter is text
        (OPEN, "**Left lung**", True, True, True),
        (OPEN, "left\u200b lung\uff0e", True, True, True),
        (SIGNED, "B", False, False, False),  # the other option: counted right once signs were stripped
        (SIGNED, "HER2+", True, False, True),
        (GERMS, "E. coli", True, False, True),  # the option's text, not a letter E
        (OPEN, "left lung", True, True, True),
        (OPEN, "Left lung.", True, True, True),
        (OPEN, "a mass in the left lung", False, False, True),
        (OPEN, "left", False, False, False),
        (OPEN, "right lung", False, False, False),
    ],
)
def test_accuracy_three_ways(record, answer, correct, strict, lenient):
    got = judge_answer(f"<think>t</think><answer>{answer}</answer>", record)
    assert (got["correct"], got["correct_strict"], got["correct_lenient"]) == (correct, strict, lenient)
    assert got["answer_type"] == ("closed" if record.choices else "open")


def test_an_answer_without_reasoning_still_counts():
    assert judge_answer("<answer>Left lung.</answer>", OPEN) == {
        "answer_type": "open",
        "correct": True,
        "correct_strict": True,
        "correct_lenient": True,
    }


def test_no_answer_tag_is_wrong_every_way():
    assert judge_answer("B", CLOSED) == {
        "answer_type": "closed",
        "correct": False,
        "correct_strict": False,
        "correct_lenient": False,
    }


def test_answer_type_prefers_the_record_meta():
    yes_no = Record(id="y", question="Is there a fracture?", choices=["yes", "no"], answer="yes",
                    meta={"answer_type": "open"})  # fmt: skip
    assert answer_type(yes_no) == "open" and answer_type(CLOSED) == "closed" and answer_type(OPEN) == "open"


def test_summarize_leaves_out_and_counts_missing_values():
    assert summarize([2.0, 4.0, None]) == {"mean": 3.0, "std": 1.0, "n": 2, "missing": 1}
    assert summarize([None]) == {"mean": None, "std": None, "n": 0, "missing": 1}


def test_bootstrap_interval_is_deterministic_and_covers_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    lo, hi = bootstrap_ci(values, samples=2000, seed=3)
    assert bootstrap_ci(values, samples=2000, seed=3) == [lo, hi]
    assert 0.19 < lo < 0.3 < hi < 0.41  # about 0.3 ± 1.96 * sqrt(0.3 * 0.7 / 100)
    assert bootstrap_ci([]) is None


def test_mcnemar_counts_discordant_pairs_and_gives_the_exact_p_value():
    base = [True] * 5 + [False] * 10 + [True] * 20
    other = [False] * 5 + [True] * 10 + [True] * 20
    result = mcnemar(base, other)
    assert (result["b"], result["c"], result["n"]) == (5, 10, 35)
    # Two-sided exact binomial: 2 * P(X <= 5), X ~ Bin(15, 1/2) = 2 * 4944 / 32768
    assert result["p_value"] == pytest.approx(2 * 4944 / 32768)
    assert mcnemar([True, False], [True, False])["p_value"] == 1.0
    with pytest.raises(ValueError, match="same questions"):
        mcnemar([True], [True, False])
