"""Reading completions: the text of a TRL completion, the <think> and last <answer> parts, option matching.

One rule for the accuracy reward and the evaluation's accuracy: an answer and the options are compared after NFKC
(full-width `Ｂ` is `B`) with invisible format characters (zero-width space, joiners, BOM, soft hyphen) dropped, and
markdown emphasis around the whole answer (`**B**`, `_lung_`) or its leading letter (`**B**: lung`) is not part of
it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

from medrl.data.records import LETTERS

ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
LETTER_RE = re.compile(r"^\(?([A-J])\)?\s*(?:[:.)]\s*(.*))?$", re.DOTALL)
_PUNCT = str.maketrans({c: " " for c in string.punctuation})
EMPHASIS_RE = re.compile(r"^(\*{1,3}|_{1,3})(.+?)\1$", re.DOTALL)
LEAD_EMPHASIS_RE = re.compile(r"^(\*{1,3}|_{1,3})(\(?[A-J]\)?[:.)]?)\1(?=[\s:.)]|$)")  # `**B**: lung`


def completion_text(completion: Any) -> str:
    """TRL passes plain strings, or conversations: [{"role": "assistant", "content": "..."}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, list):
            return "".join(part.get("text", "") for part in content if isinstance(part, dict))
        return str(content)
    return ""


def answer_text(text: str) -> str | None:
    """The content of the last <answer>...</answer>, stripped; None when there is none."""
    found = ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def plain(text: str) -> str:
    """NFKC, without format characters (category Cf: zero-width space and joiners, BOM, soft hyphen), which show
    nothing yet made `B\u200b` a different string from `B`.

    >>> plain("\uff08\uff22\uff09\u200b"), plain("cm\u00b2")
    ('(B)', 'cm2')
    """
    text = unicodedata.normalize("NFKC", text)
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def given_answer(text: str) -> str | None:
    """The last <answer> as the accuracy rule reads it: `plain`, stripped, without markdown emphasis around the
    whole of it or around its leading option letter; None when there is none. Case is kept: a lowercase `b`
    stays text, not the letter B.

    >>> given_answer("<answer>**B**\u200b</answer>"), given_answer("<answer>**_b_**</answer>")
    ('B', 'b')
    >>> given_answer("<answer>**B.** Lung</answer>"), given_answer("<answer>**b**: lung</answer>")
    ('B. Lung', '**b**: lung')
    >>> given_answer("<answer>**B** or **A**</answer>"), given_answer("no tag") is None
    ('B or **A**', True)
    """
    given = answer_text(text)
    if given is None:
        return None
    given = plain(given).strip()
    # `**B** or **A**` opens and closes twice: only a marker that does not recur inside wraps the whole answer
    while (m := EMPHASIS_RE.match(given)) and m.group(1) not in m.group(2):
        given = m.group(2).strip()
    return LEAD_EMPHASIS_RE.sub(r"\2", given, count=1)


def think_text(text: str) -> str:
    """The reasoning inside the first <think>...</think>, or '' when absent."""
    found = THINK_RE.search(text)
    return found.group(1).strip() if found else ""


def normalize(text: str) -> str:
    """Case, punctuation and spacing do not matter.

    >>> normalize("  Upper-Left. ")
    'upper left'
    """
    return " ".join(plain(text).lower().translate(_PUNCT).split())


def option_index(text: str, choices: list[str]) -> int | None:
    """Index of the one option `text` is: compared without case and spacing, then (only when that finds none)
    without punctuation too, so `HER2+` and `HER2-` stay two options while `Lung.` is `lung`.

    >>> option_index("HER2-", ["HER2+", "HER2-"]), option_index("lung.", ["liver", "Lung"])
    (1, 1)
    >>> option_index("her2", ["HER2+", "HER2-"]) is None
    True
    """
    for key in (_fold, normalize):
        wanted = key(text)
        hits = [i for i, c in enumerate(choices) if key(c) == wanted]
        if hits:
            return hits[0] if len(hits) == 1 else None
    return None


def _fold(text: str) -> str:
    return " ".join(plain(text).casefold().split())


def chosen_option(answer: str, choices: list[str]) -> int | None:
    """Index of the option an answer names (by letter or by text), None if it names none or several.

    >>> chosen_option("(B)", ["liver", "lung"]), chosen_option("Lung.", ["liver", "lung"])
    (1, 1)
    >>> chosen_option("A, B", ["liver", "lung"]) is None, chosen_option("E. coli", ["S. aureus", "E. coli"])
    (True, 1)
    """
    answer = answer.strip()
    if not answer or not choices:
        return None
    m = LETTER_RE.match(answer)
    if m:
        index = LETTERS.index(m.group(1))
        rest = (m.group(2) or "").strip()
        if index < len(choices) and (not rest or option_index(rest, choices) == index):
            return index
        # Not a letter with its own option's text: an option whose text starts like a letter ("E. coli",
        # "C. difficile"), or a letter with another option's text ("B: <text of A>"), which matches no option
    return option_index(answer, choices)


def is_correct(text: str, answer: str, choices: list[str] | None) -> bool:
    """Whether a completion's last <answer> (`given_answer`) is the reference: the same option for closed,
    normalized for open."""
    given = given_answer(text)
    if given is None:
        return False
    if choices:
        index = chosen_option(given, choices)
        return index is not None and index == option_index(answer, choices)
    return bool(given) and normalize(given) == normalize(answer)


def final_text(text: str) -> str:
    """What a report or grounding reward scores: the text after the last </think> (nothing while the reasoning
    is unfinished), and inside the last <answer> when the answer is tagged.

    >>> final_text("<think>left base</think> [0.1, 0.5, 0.4, 0.9]"), final_text("<think>still going")
    ('[0.1, 0.5, 0.4, 0.9]', '')
    """
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return ""
    tagged = answer_text(text)
    return (tagged if tagged is not None else text).strip()
