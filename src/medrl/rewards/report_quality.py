"""Report-generation rewards: a rule-based extractor of the 14 CheXpert observations (with negation and
uncertainty), a label-F1 reward between generated and reference report, and ROUGE-L.

The extractor is ours (regular expressions over clauses, in the spirit of NegEx and the CheXpert labeler):
each mention of an observation is positive, negated or uncertain by the nearest cue before it in its clause,
or by a cue after it ("... is not seen", "... cannot be excluded"). Per report, positive beats uncertain
beats negative. "No Finding" is positive when the report states something and no pathology is positive or
uncertain (support devices do not count).
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

from medrl.data.cxr.common import OBSERVATIONS
from medrl.rewards.parse import completion_text, final_text

POSITIVE, NEGATIVE, UNCERTAIN = 1, 0, -1

_W = r"(?:\s+[\w-]+){0,3}?"  # up to three words in between ("heart size is mildly enlarged")
_BE = r"\s+(?:is|are|appears?|remains?|seems?)?\s*"
_NORMAL = r"(?:normal|unremarkable|within normal limits|stable|not enlarged)"

# Subjects that "is normal" / "is enlarged" statements are made of.
_MEDIASTINUM = r"(?:cardio)?mediastinal (?:silhouette|contours?)"
_HEART = r"(?:heart(?: size)?|cardiac (?:silhouette|size))"


def _is(subject: str, state: str) -> str:
    """`subject`, up to three words, a verb like "is" or "appears", then `state`."""
    return subject + _W + _BE + state


# (observation, pattern, fixed value): a fixed value (a "normal" statement) ignores cues.
MENTIONS: list[tuple[str, str, int | None]] = [
    (
        "Enlarged Cardiomediastinum",
        r"widen(?:ed|ing) (?:of the )?mediastin\w*|mediastinal (?:widening|enlargement)|"
        r"enlarged (?:cardio)?mediastin\w*(?: silhouette| contours?)?|"
        + _is(_MEDIASTINUM, r"(?:\w+ly )?(?:enlarged|widened)"),
        None,
    ),
    ("Enlarged Cardiomediastinum", _is(_MEDIASTINUM, _NORMAL) + "|normal " + _MEDIASTINUM, NEGATIVE),
    (
        "Cardiomegaly",
        r"cardiomegaly|cardiac enlargement|enlarge(?:d|ment of the) (?:heart|cardiac silhouette)|"
        + _is(_HEART, r"(?:not )?(?:\w+ly )?enlarged"),
        None,
    ),
    (
        "Cardiomegaly",
        _is(_HEART, _NORMAL) + r"|normal (?:heart size|cardiac (?:silhouette|size)|size of the heart)",
        NEGATIVE,
    ),
    (
        "Lung Opacity",
        r"opaci(?:ty|ties|fication|fied)|infiltrat(?:e|es|ion)|airspace disease|haziness|hazy",
        None,
    ),
    ("Lung Opacity", r"lungs" + _BE + r"(?:\w+ )?clear|clear lungs", NEGATIVE),
    ("Lung Lesion", r"nodul(?:e|es|ar)|mass(?:es)?\b|lesions?|tumou?rs?|neoplasms?", None),
    ("Edema", r"edema|(?:pulmonary |vascular )+congestion|heart failure|\bchf\b", None),
    ("Consolidation", r"consolidat(?:ion|ions|ive)", None),
    ("Pneumonia", r"pneumonias?|infectious process|infection", None),
    ("Atelectasis", r"atelecta(?:sis|tic|ses)|collapsed?", None),
    ("Pneumothorax", r"pneumothora(?:x|ces)", None),
    (
        "Pleural Effusion",
        r"(?:pleural )?effusions?|pleural fluid|blunting of the (?:\w+ )*costophrenic|costophrenic angle blunting",
        None,
    ),
    (
        "Pleural Other",
        r"pleural (?:thickening|scarring|plaques?|calcification)|fibrothorax",
        None,
    ),
    ("Fracture", r"fractur(?:e|es|ed)", None),
    (
        "Support Devices",
        r"(?:endotracheal|enteric|chest|feeding|nasogastric|ng|et|tracheostomy) tubes?|"
        r"(?:picc|central|midline|venous) (?:line|catheter)s?|catheters?|pacemakers?|pacer|defibrillator|"
        r"\bicd\b|sternotomy wires|support devices?|monitoring devices?|stents?|\bport\b",
        None,
    ),
]
_MENTION_RES = [(obs, re.compile(rf"\b(?:{pattern})\b"), value) for obs, pattern, value in MENTIONS]

# A statement that the whole study is normal: it counts as saying something, and mentions no observation.
_NORMAL_STUDY = re.compile(
    r"no acute (?:cardiopulmonary|intrathoracic|cardiac or pulmonary|chest) (?:process|abnormality|abnormalities|"
    r"disease|findings?|pathology)|no acute findings?|normal chest (?:radiograph|x-ray|study)|"
    r"no (?:radiographic )?(?:evidence of )?(?:acute )?(?:cardiopulmonary )?(?:abnormality|abnormalities)"
)

# Phrases that look like cues but are not ("no change"): blanked out before cues are searched.
_PSEUDO = re.compile(r"\bno (?:significant |interval |appreciable )?(?:change|increase)|without (?:interval )?change|"
                     r"not (?:significantly )?changed")  # fmt: skip
# Uncertainty that holds a negation word ("cannot be excluded"): found first, then blanked out.
_UNCERTAIN_PHRASE = re.compile(
    r"\b(?:(?:cannot|can ?not|could not|can't|not) (?:be )?(?:entirely |completely )?(?:excluded|ruled out)|"
    r"cannot exclude|not excluded)\b"
)
_NEGATION = re.compile(
    r"\b(?:no|not|without|negative for|free of|absence of|resolved|resolution of|clear of|neither|nor)\b"
)
_NEGATION_POST = re.compile(
    r"\b(?:not (?:seen|present|identified|visualized|appreciated|evident|demonstrated)|absent|resolved|cleared|"
    r"no longer (?:seen|present|visualized))\b"
)
_UNCERTAIN = re.compile(
    r"\b(?:possible|possibly|may|might|could|likely|probable|probably|questionable|question of|suspicious|"
    r"suspected|suspect|suggestive|suggesting|suggests?|concerning|concern for|worrisome|differential|"
    r"borderline|equivocal|presumed|presumably|consider|rule out|versus|vs)\b"
)
_UNCERTAIN_POST = re.compile(r"\b(?:(?:is|are) (?:possible|suspected|questioned)|versus|vs)\b")
# Clause boundaries: a cue's scope ends at these.
_CLAUSE = re.compile(r"[.;:!?\n]|\b(?:but|however|although|though|aside from|apart from|except|there is|there are|"
                     r"otherwise)\b")  # fmt: skip


def _clauses(text: str) -> list[str]:
    text = text.lower().replace("/", " ")
    bounds = [0] + [m.start() for m in _CLAUSE.finditer(text)] + [len(text)]
    return [text[a:b] for a, b in pairwise(bounds) if text[a:b].strip()]


def _blank(pattern: re.Pattern, text: str) -> str:
    """Replace matches by spaces, keeping offsets."""
    return pattern.sub(lambda m: " " * len(m.group()), text)


def _value(clause: str, start: int, end: int) -> int:
    """Positive, negative or uncertain for the mention at clause[start:end]: the nearest cue before the end of
    the mention decides; without one, the nearest cue after it ("is not seen", "cannot be excluded")."""
    plain = _blank(_PSEUDO, clause)
    phrases = [(m.start(), m.end(), UNCERTAIN) for m in _UNCERTAIN_PHRASE.finditer(plain)]
    plain = _blank(_UNCERTAIN_PHRASE, plain)
    cues = phrases + [(m.start(), m.end(), NEGATIVE) for m in _NEGATION.finditer(plain)]
    cues += [(m.start(), m.end(), UNCERTAIN) for m in _UNCERTAIN.finditer(plain)]
    before = [(e, v) for s, e, v in cues if e <= end]
    if before:
        return max(before)[1]
    after = [(s, v) for s, e, v in phrases if s >= end]
    after += [(m.start() + end, UNCERTAIN) for m in _UNCERTAIN_POST.finditer(plain[end:])]
    after += [(m.start() + end, NEGATIVE) for m in _NEGATION_POST.finditer(plain[end:])]
    return min(after)[1] if after else POSITIVE


def extract_labels(text: str) -> dict[str, int]:
    """The CheXpert observations a report mentions: 1 positive, 0 negative, -1 uncertain; absent: not mentioned.

    >>> extract_labels("No pleural effusion. Possible consolidation at the left base.")
    {'Consolidation': -1, 'Pleural Effusion': 0}
    >>> extract_labels("No acute cardiopulmonary process.")
    {'No Finding': 1}
    """
    found: dict[str, int] = {}
    stated = False
    for clause in _clauses(text):
        if _NORMAL_STUDY.search(clause):
            stated = True
        taken: list[tuple[int, int]] = []
        for obs, pattern, fixed in _MENTION_RES:
            for m in pattern.finditer(clause):
                if any(m.start() < b and a < m.end() for a, b in taken):
                    continue  # one span, one observation ("normal heart size" is not also "heart ... enlarged")
                taken.append((m.start(), m.end()))
                value = fixed if fixed is not None else _value(clause, m.start(), m.end())
                previous = found.get(obs)
                # Per report: positive beats uncertain beats negative.
                if previous is None or _RANK[value] > _RANK[previous]:
                    found[obs] = value
                stated = True
    pathologies = [v for obs, v in found.items() if obs != "Support Devices"]
    if stated and all(v == NEGATIVE for v in pathologies):
        found["No Finding"] = POSITIVE
    return {obs: found[obs] for obs in OBSERVATIONS if obs in found}


_RANK = {NEGATIVE: 0, UNCERTAIN: 1, POSITIVE: 2}


def positive_set(labels: dict[str, int], uncertain_as_positive: bool = True) -> set[str]:
    """Observations counted as present: positive, and uncertain unless `uncertain_as_positive` is off."""
    keep = {POSITIVE, UNCERTAIN} if uncertain_as_positive else {POSITIVE}
    return {obs for obs, v in labels.items() if v in keep}


def label_f1(generated: str, reference: str) -> float:
    """F1 of the observations present in a generated report against those of the reference (uncertain counts
    as present). Two reports that agree that nothing is present score 1; an empty report scores 0.

    >>> label_f1("Cardiomegaly. No effusion.", "Enlarged heart with small pleural effusion.")
    0.6666666666666666
    >>> label_f1("Lungs are clear.", "No acute cardiopulmonary process."), label_f1("", "Normal chest radiograph.")
    (1.0, 0.0)
    """
    if not generated.strip():
        return 0.0
    gen = positive_set(extract_labels(generated))
    ref = positive_set(extract_labels(reference))
    if not gen and not ref:
        return 1.0
    return 2 * len(gen & ref) / (len(gen) + len(ref))


_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one row of the table at a time)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b, 1):
            cur = row[j]
            row[j] = prev + 1 if x == y else max(row[j], row[j - 1])
            prev = cur
    return row[-1]


def rouge_l(generated: str, reference: str) -> float:
    """ROUGE-L F1 over lowercase word tokens (no stemming).

    >>> round(rouge_l("no pleural effusion is seen", "there is no pleural effusion"), 4)
    0.6
    """
    gen, ref = tokens(generated), tokens(reference)
    if not gen or not ref:
        return 0.0
    lcs = lcs_length(gen, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(gen), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _scored(completions: list[Any], report: list[str] | None, task: list[str] | None):
    report = report or [""] * len(completions)
    task = task or ["report"] * len(completions)
    for completion, ref, kind in zip(completions, report, task, strict=True):
        yield (final_text(completion_text(completion)), ref or "") if kind == "report" else None


def report_label_reward(
    completions: list[Any], report: list[str] | None = None, task: list[str] | None = None, **kwargs: Any
) -> list[float | None]:
    """Label F1 (14 CheXpert observations) of the final answer against the reference report; None for rows of
    other tasks.

    >>> report_label_reward(["<think>heart</think>Cardiomegaly.", "No effusion."], report=["Cardiomegaly."] * 2)
    [1.0, 0.0]
    """
    return [None if pair is None else label_f1(*pair) for pair in _scored(completions, report, task)]


def report_rouge_reward(
    completions: list[Any], report: list[str] | None = None, task: list[str] | None = None, **kwargs: Any
) -> list[float | None]:
    """ROUGE-L F1 of the final answer against the reference report; None for rows of other tasks.

    >>> report_rouge_reward(["no effusion", "x"], report=["no effusion", "y"], task=["report", "grounding"])
    [1.0, None]
    """
    return [None if pair is None else rouge_l(*pair) for pair in _scored(completions, report, task)]
