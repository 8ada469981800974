"""Preference pairs for DPO from multiple-choice records: chosen is the correct option in the answer format,
rejected a wrong option. Open questions and records whose answer is not among their options give no pair."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from medrl.config import DpoConfig
from medrl.data.records import LETTERS, Record
from medrl.rewards.parse import normalize


def answer_index(record: Record) -> int | None:
    """Position of the reference answer among the options (by text, else by letter), None if absent.

    >>> answer_index(Record(id="1", question="q", choices=["Liver", "Lung"], answer="lung"))
    1
    """
    texts = [normalize(c) for c in record.choices]
    if texts.count(normalize(record.answer)) == 1:
        return texts.index(normalize(record.answer))
    label = (record.answer_label or "").strip()
    if len(label) == 1 and label in LETTERS and LETTERS.index(label) < len(record.choices):
        return LETTERS.index(label)
    return None


def option(choices: list[str], index: int, form: str) -> str:
    """An option as the answer states it.

    >>> [option(["liver", "lung"], 1, f) for f in ("text", "letter", "letter_text")]
    ['lung', 'B', 'B: lung']
    """
    if form == "letter":
        return LETTERS[index]
    if form == "letter_text":
        return f"{LETTERS[index]}: {choices[index]}"
    return choices[index]


def pair_completion(record: Record, text: str, reasoning: str) -> str:
    rationale = str(record.meta.get("rationale", "")).strip() if reasoning == "shared" else ""
    return f"<think>{rationale}</think><answer>{text}</answer>"


def preference_pairs(records: list[Record], cfg: DpoConfig, seed: int) -> tuple[list[dict[str, Any]], Counter]:
    """Rows {record, chosen, rejected} (record: position in `records`) and counts of what was skipped and why.

    The wrong option of `rejected: one` is drawn per record from (seed, record id), so it does not depend on the
    order or the number of records.

    >>> r = Record(id="1", question="q", choices=["liver", "lung", "heart"], answer="lung")
    >>> rows, counts = preference_pairs([r], DpoConfig(rejected="all", reasoning="empty"), seed=0)
    >>> [(row["chosen"], row["rejected"]) for row in rows]
    [('<think></think><answer>lung</answer>', '<think></think><answer>liver</answer>'), \
('<think></think><answer>lung</answer>', '<think></think><answer>heart</answer>')]
    """
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for position, record in enumerate(records):
        if len(record.choices) < 2:
            counts["open_question"] += 1
            continue
        right = answer_index(record)
        if right is None:
            counts["answer_not_an_option"] += 1
            continue
        wrong = [i for i in range(len(record.choices)) if i != right]
        if cfg.rejected == "one":
            wrong = [random.Random(f"{seed}:{record.id}").choice(wrong)]
        chosen = pair_completion(record, option(record.choices, right, cfg.answer), cfg.reasoning)
        for i in wrong:
            rejected = pair_completion(record, option(record.choices, i, cfg.answer), cfg.reasoning)
            rows.append({"record": position, "chosen": chosen, "rejected": rejected})
        counts["pairs"] += len(wrong)
    return rows, counts
