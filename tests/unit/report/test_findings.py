"""Findings: the verdict per claim (table-driven), arms matched to the paper's claims by their settings (not their
names), and the section in report.md, report.html and summary.json."""

import json

import pytest

from medrl.config import ARM_CONFIGS, load_config
from medrl.report import ArmResult, build_report
from medrl.report.findings import (
    ALPHA,
    NOT_MEASURED,
    NOT_REPRODUCED,
    REPRODUCED,
    Check,
    check_met,
    findings,
    match_arms,
    verdict,
)


@pytest.mark.parametrize(
    ("want", "delta", "p", "met"),
    [
        ("higher", 0.10, 0.001, True),
        ("higher", 0.10, ALPHA, False),  # p must be below ALPHA, not equal
        ("higher", 0.10, 0.2, False),
        ("higher", -0.10, 0.001, False),  # significant, the other way
        ("higher", 0.0, 1.0, False),
        ("lower", -0.10, 0.001, True),
        ("lower", 0.10, 0.001, False),
        ("lower", -0.10, 0.3, False),
        ("not higher", 5.0, 0.3, True),  # longer, but not significantly
        ("not higher", -5.0, 0.001, True),
        ("not higher", 0.0, 1.0, True),
        ("not higher", 5.0, 0.001, False),
        ("higher", None, None, None),
        ("higher", 0.1, None, None),
    ],
)
def test_check_met(want, delta, p, met):
    assert check_met(Check("accuracy", want, delta, p)) is met


def test_unknown_direction_is_an_error():
    with pytest.raises(ValueError, match="unknown direction"):
        check_met(Check("accuracy", "bigger", 0.1, 0.01))


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([("higher", 0.1, 0.001)], REPRODUCED),
        ([("higher", 0.1, 0.2)], NOT_REPRODUCED),
        ([("higher", 0.1, 0.001), ("lower", 0.1, 0.001)], NOT_REPRODUCED),  # ECR: longer, but not less accurate
        ([("higher", 3.0, 0.001), ("lower", -0.1, 0.01)], REPRODUCED),
        ([("higher", 0.1, 0.001), ("not higher", 4.0, 0.01)], NOT_REPRODUCED),  # Dr.GRPO: significantly longer
        ([("higher", 0.1, 0.001), ("higher", None, None)], NOT_MEASURED),
        ([("higher", -0.1, 0.001), ("higher", None, None)], NOT_MEASURED),
        ([], NOT_MEASURED),
    ],
)
def test_verdict(checks, expected):
    assert verdict([Check("accuracy", w, d, p) for w, d, p in checks]) == expected


def test_the_paper_preset_arms_are_matched_by_their_settings():
    roles = match_arms(load_config(preset="paper-table1").arms)
    assert roles == {
        "grpo": "grpo",
        "grpo_scratch": "grpo-scratch",
        "semantic": "grpo-semantic",
        "ecr": "grpo-semantic-ecr",
        "cwr": "grpo-semantic-cwr",
        "dr_grpo": "dr-grpo",
        "sft": "sft-full",
    }


def test_the_demo_matches_grpo_from_sft_and_its_parent():
    roles = match_arms(load_config(preset="demo").arms)
    assert roles["grpo"] == "sft-grpo" and roles["sft"] == "sft" and roles["dr_grpo"] == "sft-drgrpo"
    assert "grpo_scratch" not in roles and "semantic" not in roles


def _arm(**kw):
    return ARM_CONFIGS[kw.get("method", "none")](**kw)


def test_names_do_not_matter_settings_do():
    fmt_acc = [{"name": "format"}, {"name": "accuracy"}]
    specs = {
        "a": _arm(method="sft"),
        "b": _arm(method="grpo", init="arm:a"),  # the reference: format + accuracy from the most tuned start
        "c": _arm(method="grpo"),  # the same rewards from the untouched base: "scratch"
        "d": _arm(method="grpo", init="arm:a", rewards=[*fmt_acc, {"name": "ecr"}]),  # ECR over plain GRPO
        "e": _arm(method="dr_grpo"),  # another start than the reference: not Dr.GRPO's pair
        "f": _arm(method="grpo", init="arm:a", rewards=[{"name": "format"}]),  # other rewards: no role
    }
    assert match_arms(specs) == {"grpo": "b", "grpo_scratch": "c", "ecr": "d", "sft": "a"}


def _result(name, method, correct, think):
    pairs = enumerate(zip(correct, think, strict=True))
    preds = [{"id": str(i), "correct": ok, "think_tokens": t} for i, (ok, t) in pairs]
    acc = sum(correct) / len(correct)
    return ArmResult(name, name.upper(), method, 100, {"accuracy": {"mean": acc}, "think_tokens": {"mean": 1.0}}, [],
                     preds)  # fmt: skip


def test_findings_from_paired_predictions():
    n = 40
    specs = {
        "sft": _arm(method="sft"),
        "grpo": _arm(method="grpo", init="arm:sft"),
        "dr": _arm(method="dr_grpo", init="arm:sft"),
    }
    arms = [
        _result("sft", "sft", [i < 10 for i in range(n)], [10] * n),
        _result("grpo", "grpo", [i < 30 for i in range(n)], [10] * n),  # b = 0, c = 20: p ~ 2e-6
        _result("dr", "dr_grpo", [i < 32 for i in range(n)], [10 + i for i in range(n)]),  # longer: a Dr.GRPO miss
    ]
    by_claim = {f["claim"]: f for f in findings(arms, specs)}
    assert by_claim["grpo_vs_sft"]["verdict"] == REPRODUCED
    assert by_claim["grpo_vs_sft"]["mcnemar"] == {"b": 0, "c": 20, "n": n}
    assert by_claim["dr_grpo"]["verdict"] == NOT_REPRODUCED  # 2 more right (p 0.5), and longer reasoning
    assert by_claim["semantic"]["verdict"] == NOT_MEASURED and by_claim["ecr"]["verdict"] == NOT_MEASURED
    # an arm that was not evaluated cannot be compared
    by_claim = {f["claim"]: f for f in findings(arms[:2], specs)}
    assert by_claim["dr_grpo"]["verdict"] == NOT_MEASURED


def test_findings_section_in_every_report_file(tmp_path):
    n = 40
    specs = {"sft": _arm(method="sft"), "grpo": _arm(method="grpo", init="arm:sft")}
    arms = [
        _result("sft", "sft", [i < 10 for i in range(n)], [10] * n),
        _result("grpo", "grpo", [i < 30 for i in range(n)], [10] * n),
    ]
    text = build_report("Study", arms, tmp_path, specs=specs).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| GRPO is more accurate than SFT"))
    assert "GRPO 58.04 vs SFT 52.00 (+6.04 pp)" in row
    assert "+50.00 pp (McNemar p < 0.001, b/c 0/20)" in row and row.endswith("| reproduced |")
    assert "## Findings" in text
    html = (tmp_path / "report.html").read_text()
    assert '<table class="findings">' in html and "reproduced" in html
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {f["claim"]: f["verdict"] for f in summary["findings"]}["grpo_vs_sft"] == REPRODUCED


def test_without_arm_settings_every_claim_is_not_measured(tmp_path):
    arms = [_result("sft", "sft", [True, False], [1, 1]), _result("grpo", "grpo", [True, True], [1, 1])]
    build_report("Study", arms, tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {f["verdict"] for f in summary["findings"]} == {NOT_MEASURED}


def test_a_grpo_arm_whose_sft_parent_was_not_evaluated_is_matched_without_it():
    """A run of `--arms zero-shot,sft-grpo` evaluates the GRPO arm but not the SFT arm it starts from."""
    specs = load_config(preset="demo").arms
    roles = match_arms({n: s for n, s in specs.items() if n in ("zero-shot", "sft-grpo")})
    assert roles == {"grpo": "sft-grpo"}
