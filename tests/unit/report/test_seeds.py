"""The report of a study run over several seeds (medrl.report.seeds): pooled Table 1 rows, pooled paired tests and
per-seed agreement in Findings."""

from __future__ import annotations

import json

from medrl.config import load_config
from medrl.report import ArmResult, build_report
from medrl.report.figures import training_lines
from medrl.report.seeds import pool

N = 40


def _arm(name: str, label: str, method: str, right: set[int]) -> ArmResult:
    predictions = [{"id": str(i), "correct": i in right, "think_tokens": 10} for i in range(N)]
    accuracy = len(right) / N
    return ArmResult(name, label, method, 256, {"accuracy": {"mean": accuracy, "std": 0.5, "n": N}}, [], predictions)


def _study():
    """SFT right on 10 questions in every seed; SFT -> GRPO right on 30 in seeds 0 and 1, on the same 10 in seed 2."""
    cfg = load_config(preset="demo", overrides=["seeds=[0, 1, 2]"], arms=["sft-grpo"]).with_seeds()
    arms = [_arm("zero-shot", "Base", "none", set(range(5)))] if "zero-shot" in cfg.arms else []
    for seed in (0, 1, 2):
        arms.append(_arm(f"sft-seed{seed}", "SFT (full)", "sft", set(range(10))))
    for seed, right in ((0, set(range(30))), (1, set(range(30))), (2, set(range(10)))):
        arms.append(_arm(f"sft-grpo-seed{seed}", "SFT -> GRPO", "grpo", right))
    return cfg, arms


def test_table1_has_one_row_per_arm_with_the_mean_and_spread_over_seeds(tmp_path):
    cfg, arms = _study()
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    table = text[text.index("## Table 1") : text.index("## Findings")]
    assert table.count("| SFT -> GRPO |") == 1 and table.count("| SFT (full) |") == 1
    # accuracy per seed 75, 75, 25: mean 58.33, sample std 28.87
    assert "| SFT -> GRPO | 256 | 58.33 (± 28.87) |" in table
    assert "| SFT (full) | 256 | 25.00 (± 0.00) |" in table
    assert "3 seeds: 0, 1, 2" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["sft-grpo"]["metrics"]["accuracy"]["seed_means"] == [0.75, 0.75, 0.25]
    step = {"started": 0, "ended": 1, "wall_seconds": 1.0, "cpu_seconds": 1.0, "gpus": 0, "gpu_seconds": 0.0}
    costly = build_report("Study", arms, tmp_path / "c", specs=cfg.arms, cost={"arms": {"sft-seed1": {"train": step}}})
    assert "| SFT (full) (seed 1) | 1 s |" in costly.read_text()


def test_a_claim_the_study_cannot_test_names_no_seeds(tmp_path):
    cfg, arms = _study()
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    assert "| not measured |" in text and "not measured (reproduced" not in text


def test_findings_pool_the_seeds_and_count_the_seeds_that_agree(tmp_path):
    cfg, arms = _study()
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    found = {f["claim"]: f for f in json.loads((tmp_path / "summary.json").read_text())["findings"]}
    grpo_vs_sft = found["grpo_vs_sft"]
    assert (grpo_vs_sft["arm"], grpo_vs_sft["than"]) == ("sft-grpo", "sft")
    # pooled over the seeds' (seed, question) pairs: 20 + 20 + 0 questions only GRPO answers right, none only SFT
    assert grpo_vs_sft["mcnemar"] == {"b": 0, "c": 40, "n": 3 * N}
    assert grpo_vs_sft["verdict"] == "reproduced" and grpo_vs_sft["seeds"] == {"reproduced": 2, "of": 3, "failed": []}
    assert "reproduced (reproduced in 2 of 3 seeds)" in text
    assert "Cochran-Mantel-Haenszel" in text


def test_one_seed_reports_as_before(tmp_path):
    cfg = load_config(preset="demo", arms=["sft-grpo"])
    arms = [_arm("sft", "SFT (full)", "sft", set(range(10))), _arm("sft-grpo", "SFT -> GRPO", "grpo", set(range(30)))]
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    assert "| SFT -> GRPO | 256 | 75.00 |" in text and "seeds" not in text.split("## Findings")[1].split("##")[0]


def test_a_pooled_claim_most_seeds_do_not_reproduce_is_not_called_reproduced(tmp_path):
    """One lucky seed carries the pooled test: GRPO right on 30 questions in seed 0 only, on SFT's 10 in seeds 1
    and 2. Pooled, b = 0 and c = 20 (p < 0.001), yet only 1 of 3 seeds reproduces the claim."""
    cfg = load_config(preset="demo", overrides=["seeds=[0, 1, 2]"], arms=["sft-grpo"]).with_seeds()
    arms = [_arm("zero-shot", "Base", "none", set(range(5)))] if "zero-shot" in cfg.arms else []
    for seed in (0, 1, 2):
        arms.append(_arm(f"sft-seed{seed}", "SFT (full)", "sft", set(range(10))))
        arms.append(_arm(f"sft-grpo-seed{seed}", "SFT -> GRPO", "grpo", set(range(30 if seed == 0 else 10))))
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    found = {f["claim"]: f for f in json.loads((tmp_path / "summary.json").read_text())["findings"]}
    grpo_vs_sft = found["grpo_vs_sft"]
    assert grpo_vs_sft["mcnemar"] == {"b": 0, "c": 20, "n": 3 * N}
    assert grpo_vs_sft["seeds"] == {"reproduced": 1, "of": 3, "failed": []}
    assert grpo_vs_sft["verdict"] == "not reproduced in most seeds"
    assert "| not reproduced in most seeds (reproduced in 1 of 3 seeds) |" in text


def test_a_cell_pooled_over_fewer_seeds_than_the_study_says_so(tmp_path):
    """Seed 2's GRPO arm failed (it would have scored 25%): the row is the mean of seeds 0 and 1, under a note
    that speaks of 3 seeds; the cell must not read as a 3-seed mean."""
    cfg, arms = _study()
    arms = [a for a in arms if a.name != "sft-grpo-seed2"]
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    table = text[text.index("## Table 1") : text.index("## Findings")]
    assert "| SFT -> GRPO | 256 | 75.00 (± 0.00) (2 of 3 seeds) |" in table
    assert "| SFT (full) | 256 | 25.00 (± 0.00) |" in table  # every seed there: no count
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["arms"]["sft-grpo"]["metrics"]["accuracy"]["seeds"] == 2


def test_two_untrained_arms_are_paired_once_however_many_seeds(tmp_path):
    """paper-table1 compares LLaVA and Llama-Vision (evaluated once) with the zero-shot baseline (evaluated once);
    with 3 seeds each shared evaluation was paired 3 times: b/c 0/15, p < 0.001 "significant", from the 0/5
    (p 0.062) of one evaluation each."""
    cfg = load_config(
        preset="demo", overrides=["seeds=[0, 1, 2]", "arms.other={method: none, label: Other VLM}"]
    ).with_seeds()
    arms = [_arm("zero-shot", "Base", "none", set(range(5))), _arm("other", "Other VLM", "none", set(range(10)))]
    for seed in (0, 1, 2):
        arms.append(_arm(f"sft-seed{seed}", "SFT (full)", "sft", set(range(10))))
    build_report("Study", arms, tmp_path, baseline="zero-shot", specs=cfg.arms)
    comparisons = {c["arm"]: c for c in json.loads((tmp_path / "summary.json").read_text())["comparisons"]}
    other = comparisons["other"]
    assert other["paired_questions"] == N
    assert (other["tests"]["accuracy"]["b"], other["tests"]["accuracy"]["c"]) == (0, 5)
    assert round(other["tests"]["accuracy"]["p_value"], 4) == 0.0625
    # a trained arm still pairs each seed with the shared evaluation (the pooled test of the module docstring)
    assert comparisons["sft"]["paired_questions"] == 3 * N


def test_seed_agreement_counts_only_the_seeds_that_finished_and_names_the_failed_ones(tmp_path):
    """Seeds 1 and 2 of SFT -> GRPO failed; seed 0 reproduces the claim. The agreement is 1 of the 1 seed that
    finished, not "1 of 3" (which read as two seeds that did not reproduce it and turned the verdict into "not
    reproduced in most seeds")."""
    cfg, arms = _study()
    arms = [a for a in arms if a.name not in ("sft-grpo-seed1", "sft-grpo-seed2")]
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    found = {f["claim"]: f for f in json.loads((tmp_path / "summary.json").read_text())["findings"]}
    grpo_vs_sft = found["grpo_vs_sft"]
    assert grpo_vs_sft["seeds"] == {"reproduced": 1, "of": 1, "failed": [1, 2]}
    assert grpo_vs_sft["verdict"] == "reproduced"
    assert "| reproduced (reproduced in 1 of 1 seeds; seeds 1, 2 did not finish) |" in text


def test_a_failed_seed_is_not_counted_against_the_claim(tmp_path):
    """Seed 2 of SFT -> GRPO failed, seeds 0 and 1 reproduce: 2 of 2, seed 2 named."""
    cfg, arms = _study()
    arms = [a for a in arms if a.name != "sft-grpo-seed2"]
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    found = {f["claim"]: f for f in json.loads((tmp_path / "summary.json").read_text())["findings"]}
    assert found["grpo_vs_sft"]["seeds"] == {"reproduced": 2, "of": 2, "failed": [2]}
    assert "| reproduced (reproduced in 2 of 2 seeds; seed 2 did not finish) |" in text


def test_training_curves_of_an_arm_run_over_seeds_draw_every_seed(tmp_path):
    """The pooled arm carried seed 0's training log only: its reward curve showed one seed as the arm's."""
    cfg, arms = _study()
    for arm in arms:
        if arm.name.startswith("sft-grpo-seed"):
            seed = int(arm.name[-1])
            arm.train_log = [{"step": s, "reward": seed + s / 10} for s in range(1, 4)]
    pooled, _, _ = pool(arms, cfg.arms)
    grpo = next(a for a in pooled if a.name == "sft-grpo")
    lines = [(label, values) for label, _, _, _, values in training_lines([grpo], "reward")]
    assert lines == [(f"SFT -> GRPO (seed {k})", [k + 0.1, k + 0.2, k + 0.3]) for k in (0, 1, 2)]
    assert len({style for _, _, style, _, _ in training_lines([grpo], "reward")}) == 3
    text = build_report("Study", arms, tmp_path, specs=cfg.arms).read_text()
    assert "figures/reward_curve.png" in text and "a line per seed" in text
