"""Accuracy of one answer three ways: the reward's rule (Table 1), strict (the option letter) and lenient (text).

Closed questions have options; open ones do not (a record's `meta.answer_type` says which when it knows).
"""

from __future__ import annotations

import re

from medrl.data.records import LETTERS, Record
from medrl.rewards.parse import LETTER_RE, given_answer, is_correct, normalize, option_index


def answer_type(record: Record) -> str:
    """'closed' or 'open': the record's own `meta.answer_type`, else closed when it has options."""
    kind = str(record.meta.get("answer_type", "")).lower()
    if kind in ("closed", "open"):
        return kind
    return "closed" if record.choices else "open"


def reference_index(record: Record) -> int | None:
    if record.answer_label and record.answer_label in LETTERS[: len(record.choices)]:
        return LETTERS.index(record.answer_label)
    return option_index(record.answer, record.choices)


def _contains(haystack: str, needle: str) -> bool:
    return bool(needle) and re.search(rf"(?:^| ){re.escape(needle)}(?: |$)", haystack) is not None


def strict_correct(completion: str, record: Record) -> bool:
    """Closed: the answer is the reference's letter alone ("B", "(B)", "B.", "**B**"); open: the same text,
    normalized. The answer is read by the reward's rule (medrl.rewards.parse.given_answer).

    >>> r = Record(id="1", question="q", choices=["liver", "lung"], answer="lung", answer_label="B")
    >>> [strict_correct(f"<answer>{a}</answer>", r) for a in ["B", "(B)", "lung", "B: lung", "A"]]
    [True, True, False, False, False]
    """
    given = given_answer(completion)
    if given is None:
        return False
    if record.choices:
        m = LETTER_RE.match(given.strip())
        return m is not None and not (m.group(2) or "").strip() and LETTERS.index(m.group(1)) == reference_index(record)
    return bool(given.strip()) and normalize(given) == normalize(record.answer)


def lenient_correct(completion: str, record: Record) -> bool:
    """The reward's rule, or the answer text names the reference (and, when closed, no other option).

    >>> r = Record(id="1", question="q", choices=["liver", "lung"], answer="lung", answer_label="B")
    >>> [lenient_correct(f"<answer>{a}</answer>", r) for a in ["B", "The lung.", "lung or liver", "A"]]
    [True, True, False, False]
    >>> lenient_correct("<answer>a mass in the left lung</answer>", Record(id="2", question="q", answer="left lung"))
    True
    """
    if is_correct(completion, record.answer, record.choices):
        return True
    given = given_answer(completion)
    if given is None:
        return False
    text = normalize(given)
    if record.choices:
        named = [i for i, c in enumerate(record.choices) if _contains(text, normalize(c))]
        return len(named) == 1 and named[0] == reference_index(record)
    return _contains(text, normalize(record.answer))


def judge_answer(completion: str, record: Record) -> dict:
    """The per-question accuracy fields of a prediction row."""
    return {
        "answer_type": answer_type(record),
        "correct": is_correct(completion, record.answer, record.choices),
        "correct_strict": strict_correct(completion, record),
        "correct_lenient": lenient_correct(completion, record),
    }
