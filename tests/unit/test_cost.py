"""Cost of a study (medrl.cost, study.record_cost/study_cost, the report's Cost section)."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

from medrl import store, study
from medrl.cost import Meter, total
from medrl.report import build_report, scalar_metrics
from medrl.store.layout import RunLayout
from tests.support.report_study import full_arms


def test_meter_measures_wall_and_cpu_time():
    with Meter() as idle:
        time.sleep(0.3)
    with Meter() as busy:
        end = time.process_time() + 0.3
        while time.process_time() < end:
            pass
    assert idle.record["wall_seconds"] >= 0.3 and idle.record["cpu_seconds"] < 0.1  # sleeping costs no CPU
    assert busy.record["cpu_seconds"] >= 0.3 and busy.record["gpus"] == 0 and busy.record["gpu_seconds"] == 0
    assert abs(busy.record["ended"] - busy.record["started"] - busy.record["wall_seconds"]) < 0.01


def test_study_cost_sums_steps_and_spans_the_wall_time(tmp_path):
    run = RunLayout(store.normalize(str(tmp_path / "run")))
    step = {"wall_seconds": 100.0, "cpu_seconds": 150.0, "gpus": 4, "gpu_seconds": 400.0}
    store.write_text(run.prep_cost, json.dumps({**step, "started": 0, "ended": 100, "gpus": 0, "gpu_seconds": 0}))
    study.record_cost(run.arm("sft").cost, "train", {**step, "started": 100, "ended": 200})
    doc = study.record_cost(run.arm("sft").cost, "evaluate", {**step, "started": 200, "ended": 300})
    assert set(doc) == {"train", "evaluate"}  # the second step is added, the first kept
    study.record_cost(run.arm("grpo").cost, "train", {**step, "started": 100, "ended": 200})  # beside sft

    cfg = SimpleNamespace(arms={"sft": None, "grpo": None, "zero-shot": None})
    cost = study.study_cost(run, cfg)  # type: ignore[arg-type]
    assert cost["arms"]["zero-shot"] == {}
    assert cost["study"] == {"wall_seconds": 300.0, "step_seconds": 400.0, "cpu_seconds": 600.0, "gpu_seconds": 1200.0}
    assert total([])["wall_seconds"] == 0.0


def test_report_shows_cost_per_arm_and_for_the_study(tmp_path):
    step = {
        "started": 0,
        "ended": 7200,
        "wall_seconds": 7200.0,
        "cpu_seconds": 3600.0,
        "gpus": 4,
        "gpu_seconds": 28800.0,
    }
    arms = full_arms()
    cost = {
        "prep": {**step, "wall_seconds": 60.0, "cpu_seconds": 90.0, "gpus": 0, "gpu_seconds": 0.0},
        "arms": {arms[1].name: {"train": step, "evaluate": {**step, "wall_seconds": 600.0, "gpu_seconds": 2400.0}}},
        "study": {"wall_seconds": 7900.0, "step_seconds": 7860.0, "cpu_seconds": 7290.0, "gpu_seconds": 31200.0},
    }
    text = build_report("Study", arms, tmp_path, cost=cost).read_text()
    section = text[text.index("## Cost") :]
    assert f"| {arms[1].label} | 2 h 00 min | 10.0 min | 2.000 | 8.667 |" in section
    assert "| data (prep) | 60 s | - | 0.025 | 0.000 |" in section
    assert "| **study** | 2 h 11 min end to end (2 h 11 min of steps) |  | 2.025 | 8.667 |" in section
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert scalar_metrics(summary)["study_gpu_seconds"] == 31200.0
