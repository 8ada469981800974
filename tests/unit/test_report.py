"""The report: Table 1 layout (a row per arm, mean (± std), '-' where not measured) and the reward curve."""

from medrl.report import ArmResult, build_report, table1


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
