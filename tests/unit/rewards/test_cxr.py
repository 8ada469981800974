"""Chest X-ray rewards, table-driven: the CheXpert label extractor (negation, uncertainty), label F1, ROUGE-L,
and the grounding reward (several boxes, swapped corners, out-of-range and malformed boxes)."""

import re

import pytest

from medrl.rewards import REWARDS
from medrl.rewards.grounding import box_f1, grounding_reward, parse_boxes
from medrl.rewards.report_quality import (
    OBSERVATIONS,
    extract_labels,
    label_f1,
    report_label_reward,
    report_rouge_reward,
    rouge_l,
)

LABEL_CASES = [
    # negation
    ("No pleural effusion.", {"Pleural Effusion": 0, "No Finding": 1}),
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
    ("There is no evidence of pneumonia.", {"Pneumonia": 0, "No Finding": 1}),
    ("Negative for fracture.", {"Fracture": 0, "No Finding": 1}),
    ("The lungs are clear without consolidation.", {"Lung Opacity": 0, "Consolidation": 0, "No Finding": 1}),
    ("Pneumothorax is not seen.", {"Pneumothorax": 0, "No Finding": 1}),
    ("The right pneumothorax has resolved.", {"Pneumothorax": 0, "No Finding": 1}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("Heart size is normal.", {"Cardiomegaly": 0, "No Finding": 1}),
    ("The cardiomediastinal silhouette is within normal limits.", {"Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ("No acute cardiopulmonary process.", {"No Finding": 1}),
    ("No acute intrathoracic abnormality.", {"No Finding": 1}),
    # uncertainty
    ("Possible consolidation.", {"Consolidation": -1}),
    ("Pneumonia cannot be excluded.", {"Pneumonia": -1}),
    ("Cannot exclude pneumonia. No pneumothorax.", {"Pneumonia": -1, "Pneumothorax": 0}),
    ("Atelectasis versus pneumonia.", {"Atelectasis": -1, "Pneumonia": -1}),
    ("Findings suspicious for pulmonary edema.", {"Edema": -1}),
    ("Left basilar opacity, likely atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    # a negation's scope ends at its clause
    ("No pleural effusion, possible consolidation.", {"Pleural Effusion": 0, "Consolidation": -1}),
    ("No effusion but there is a small pneumothorax.", {"Pleural Effusion": 0, "Pneumothorax": 1}),
    ("No pneumothorax. Small left pleural effusion.", {"Pneumothorax": 0, "Pleural Effusion": 1}),
    # pseudo-negation: "no change in" does not negate
    ("No change in the small left pleural effusion.", {"Pleural Effusion": 1}),
    # positives, several per sentence; positive beats negative in one report
    (
        "Moderate cardiomegaly with mild pulmonary edema and bibasilar atelectasis.",
        {"Cardiomegaly": 1, "Edema": 1, "Atelectasis": 1},
    ),
    ("The heart is mildly enlarged.", {"Cardiomegaly": 1}),
    ("Widened mediastinum.", {"Enlarged Cardiomediastinum": 1}),
    ("A 1.5 cm nodule in the right upper lobe.", {"Lung Lesion": 1}),
    ("Healed rib fracture. Pleural thickening at the apex.", {"Fracture": 1, "Pleural Other": 1}),
    ("No pneumothorax. Right apical pneumothorax.", {"Pneumothorax": 1}),
    # support devices do not stop "No Finding"
    (
        "Endotracheal tube 4 cm above the carina. No pneumothorax.",
        {"Support Devices": 1, "Pneumothorax": 0, "No Finding": 1},
    ),
    # nothing said
    ("Patient is rotated.", {}),
    ("", {}),
]


@pytest.mark.parametrize(("text", "expected"), LABEL_CASES)
def test_extract_labels(text, expected):
    assert extract_labels(text) == expected


def test_labels_are_the_14_chexpert_observations_in_order():
    assert len(OBSERVATIONS) == 14
    labels = extract_labels("Pleural effusion. Cardiomegaly. Possible pneumonia. Edema.")
    assert list(labels) == ["Cardiomegaly", "Edema", "Pneumonia", "Pleural Effusion"]


LABEL_F1_CASES = [
    ("Cardiomegaly.", "Cardiomegaly.", 1.0),
    ("Cardiomegaly.", "No cardiomegaly.", 0.0),
    ("Cardiomegaly. No effusion.", "Enlarged heart with small pleural effusion.", 2 / 3),
    ("Possible pneumonia.", "Pneumonia.", 1.0),  # uncertain counts as present
    ("Lungs are clear.", "No acute cardiopulmonary process.", 1.0),  # both normal (No Finding)
    ("Patient rotated.", "Patient rotated.", 1.0),  # agree that nothing is present
    ("", "Normal chest radiograph.", 0.0),  # saying nothing is not agreeing
    ("   ", "", 0.0),
]


@pytest.mark.parametrize(("generated", "reference", "expected"), LABEL_F1_CASES)
def test_label_f1(generated, reference, expected):
    assert label_f1(generated, reference) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("generated", "reference", "expected"),
    [
        ("no pleural effusion", "no pleural effusion", 1.0),
        ("No pleural effusion.", "no PLEURAL effusion", 1.0),
        ("no pleural effusion is seen", "there is no pleural effusion", 0.6),
        ("cardiomegaly", "no effusion", 0.0),
        ("", "no effusion", 0.0),
        ("a b c d", "a c", 2 * (2 / 4) * 1.0 / (2 / 4 + 1.0)),
    ],
)
def test_rouge_l(generated, reference, expected):
    assert rouge_l(generated, reference) == pytest.approx(expected)


def test_report_rewards_score_only_the_text_after_think():
    ref = ["Cardiomegaly. No pleural effusion."] * 3
    completions = [
        "<think>I see no cardiomegaly and a pleural effusion</think>Cardiomegaly. No pleural effusion.",
        "<think>Cardiomegaly. No pleural effusion.",  # unfinished reasoning: nothing is scored
        [{"role": "assistant", "content": "<answer>Cardiomegaly. No pleural effusion.</answer>"}],
    ]
    assert report_label_reward(completions, report=ref) == [1.0, 0.0, 1.0]
    assert report_rouge_reward(completions, report=ref) == [1.0, 0.0, 1.0]


def test_report_rewards_skip_rows_of_other_tasks():
    out = report_label_reward(["Cardiomegaly.", "[0.1, 0.1, 0.2, 0.2]"], report=["Cardiomegaly.", ""],
                              task=["report", "grounding"])  # fmt: skip
    assert out == [1.0, None]


REF = [[0.1, 0.1, 0.4, 0.4], [0.6, 0.5, 0.9, 0.9]]

GROUNDING_CASES = [
    ("[0.1, 0.1, 0.4, 0.4] [0.6, 0.5, 0.9, 0.9]", REF, 1.0),
    ("[0.6, 0.5, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]", REF, 1.0),  # order does not matter
    ("[[0.1, 0.1, 0.4, 0.4], [0.6, 0.5, 0.9, 0.9]]", REF, 1.0),  # a nested list
    ("[0.4, 0.4, 0.1, 0.1] [0.9, 0.9, 0.6, 0.5]", REF, 1.0),  # swapped corners name the same boxes
    ("[0.1, 0.1, 0.4, 0.4]", REF, 2 * 1.0 / 3),  # one missing: soft F1 2 * 1 / (1 + 2)
    ("[0.1, 0.1, 0.4, 0.4] [0.6, 0.5, 0.9, 0.9] [0.0, 0.0, 0.05, 0.05]", REF, 2 * 2.0 / 5),  # one extra
    ("[0.1, 0.1, 0.4, 0.4] [0.6, 0.5, 0.9, 1.2]", REF, 2 * 1.0 / 4),  # out of range: malformed, scores 0
    ("[0.1, 0.1, 0.4, 0.4] [0.6, 0.5, 0.9]", REF, 2 * 1.0 / 4),  # three numbers: malformed
    ("[0.1, 0.1, 0.4, 0.4] [0.6, 0.5, 0.6, 0.9]", REF, 2 * 1.0 / 4),  # no area: malformed
    ("[0.1, 0.1, 0.4, 0.4] [a, b, c, d]", [REF[0]], 1.0),  # no digit: not a box at all
    ("[-0.1, 0.1, 0.4, 0.4]", [REF[0]], 0.0),
    ("[10, 10, 40, 40]", [REF[0]], 0.0),  # pixels, not 0..1
    ("[0.1, 0.1, 0.25, 0.4]", [REF[0]], 0.5),  # half the reference box: IoU 0.5
    ("[0.1, 0.1, 0.4, 0.4]", [[0.4, 0.4, 0.1, 0.1]], 1.0),  # reference corners swapped too
    ("No finding.", [], 1.0),  # nothing to find, nothing given
    ("[0.1, 0.1, 0.4, 0.4]", [], 0.0),
    ("The opacity is in the left lung.", REF, 0.0),
    ("<think>[0.1, 0.1, 0.4, 0.4]</think>none", [REF[0]], 0.0),  # boxes inside <think> are not the answer
    ("<think>upper left</think><answer>[0.1, 0.1, 0.4, 0.4]</answer>", [REF[0]], 1.0),
]


@pytest.mark.parametrize(("text", "boxes", "expected"), GROUNDING_CASES)
def test_grounding_reward(text, boxes, expected):
    assert grounding_reward([text], boxes=[boxes], task=["grounding"]) == [pytest.approx(expected)]


def _scaled(text: str) -> str:
    """A 0..1 answer written at Qwen-VL's 0..1000 scale: every number times 1000, as whole numbers."""
    return re.sub(r"\d+\.\d+", lambda m: str(round(float(m.group()) * 1000)), text)


# the cases that score above 0 (the malformed ones are the next test's)
@pytest.mark.parametrize(("text", "boxes", "expected"), [c for c in GROUNDING_CASES if c[2] > 0 and "[" in c[0]])
def test_grounding_reward_at_box_scale_1000_scores_as_its_0_to_1_twin(text, boxes, expected):
    twin = grounding_reward([text], boxes=[boxes], task=["grounding"], box_scale=[1])
    assert twin == [pytest.approx(expected)]
    assert grounding_reward([_scaled(text)], boxes=[boxes], task=["grounding"], box_scale=[1000]) == twin


def test_box_scale_1000_parses_0_to_1000_and_rejects_values_beyond():
    assert parse_boxes("[100, 100, 400, 400] [0, 0, 1000, 1000]", 1000) == [(0.1, 0.1, 0.4, 0.4), (0, 0, 1, 1)]
    assert parse_boxes("[100, 100, 1001, 400] [100, -1, 400, 400]", 1000) == [None, None]
    # asked for 0..1000, an answer in 0..1 is a box of under a thousandth of the image: it misses
    assert grounding_reward(["[0.1, 0.1, 0.4, 0.4]"], boxes=[[REF[0]]], task=["grounding"], box_scale=[1000]) == [0.0]
    # without the column (records written before the setting) the scale is 1: 0..1000 numbers are malformed
    assert grounding_reward(["[100, 100, 400, 400]"], boxes=[[REF[0]]], task=["grounding"]) == [0.0]


def test_grounding_matching_is_one_to_one():
    # Two predictions on the same reference box: only one can match it.
    assert box_f1(parse_boxes("[0.1, 0.1, 0.4, 0.4] [0.1, 0.1, 0.4, 0.4]"), [(0.1, 0.1, 0.4, 0.4)]) == 2 / 3
    # The matching maximises the total IoU, not each box greedily.
    predicted = parse_boxes("[0.0, 0.0, 0.5, 0.5] [0.0, 0.0, 0.3, 0.3]")
    reference = [(0.0, 0.0, 0.3, 0.3), (0.0, 0.0, 0.6, 0.6)]
    assert box_f1(predicted, reference) == pytest.approx((1.0 + 0.25 / 0.36) * 2 / 4)


def test_grounding_reward_keeps_batch_order_and_skips_other_tasks():
    out = grounding_reward(
        ["[0.1, 0.1, 0.4, 0.4]", "Cardiomegaly.", "[0.6, 0.5, 0.9, 0.9]"],
        boxes=[[REF[0]], None, [REF[0]]],
        task=["grounding", "report", "grounding"],
    )
    assert out == [1.0, None, 0.0]


def test_cxr_rewards_are_registered_by_config_name():
    assert REWARDS["grounding_iou"] is grounding_reward
    assert REWARDS["report_label_f1"] is report_label_reward
    assert REWARDS["report_rouge_l"] is report_rouge_reward
