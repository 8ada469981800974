"""The report component, two ways: its Python function with kfp artifact objects, and as a task run by kfp.local
(real kfp SDK, subprocess runner). Both write report.md/report.html into the run and hand Markdown, HTML and
scalar Metrics artifacts to the UI."""

import json

import pytest
from kfp import dsl, local

from medrl import store
from medrl.config import dump_config, load_config
from medrl.store.layout import RunLayout
from tests.support.report_study import full_arms


@pytest.fixture
def run_uri(tmp_path):
    """A run folder as the pipeline leaves it before the report step: config, data summary, two evaluated arms."""
    root = store.normalize(str(tmp_path / "store"))
    cfg = load_config(preset="demo", overrides=[f"store={root}"])
    run = RunLayout.create(root, cfg.experiment, "r1")
    store.write_text(run.config, dump_config(cfg))
    with store.commit_dir(run.data) as out:
        (out / "summary.json").write_text(json.dumps({"train": 2048, "test": 40}))
    for arm, name in zip(full_arms(), ("zero-shot", "sft-grpo"), strict=True):
        paths = run.arm(name)
        store.write_text(paths.metrics, json.dumps({"arm": name, "metrics": arm.metrics}))
        store.write_text(
            paths.predictions, "".join(json.dumps({**p, "completion": "x"}) + "\n" for p in arm.predictions)
        )
        store.write_text(paths.train_log, "".join(json.dumps(r) + "\n" for r in arm.train_log))
    return run.uri


def _check_run(uri: str) -> None:
    report = store.open_dir(uri + "/report")
    text = (report / "report.md").read_text()
    assert "| SFT -> GRPO | 2,048 | 62.50 |" in text and "| Tiny Qwen2-VL (no fine-tuning) | - | 25.00 |" in text
    assert "Against the baseline: Tiny Qwen2-VL (no fine-tuning)" in text  # the demo's report.baseline
    assert (report / "report.html").read_text().count("data:image/png;base64,") == 5


def test_component_function(run_uri, tmp_path):
    from medrl.components.report import report

    md = dsl.Markdown(uri=str(tmp_path / "ui.md"))
    page = dsl.HTML(uri=str(tmp_path / "ui.html"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    uri = report.python_func(run_uri=run_uri, report_md=md, report_html=page, metrics=metrics)
    assert uri == run_uri + "/report"
    _check_run(run_uri)
    assert "| SFT -> GRPO | 2,048 | 62.50 |" in (tmp_path / "ui.md").read_text()
    assert (tmp_path / "ui.html").read_text().startswith("<!doctype html>")
    assert metrics.metadata["sft-grpo_accuracy"] == 0.625
    assert metrics.metadata["zero-shot_similarity"] == 0.2
    assert 0 < metrics.metadata["sft-grpo_accuracy_mcnemar_p"] < 0.001


def test_component_through_kfp_local(run_uri, tmp_path):
    from medrl.components.report import report

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    task = report(run_uri=run_uri)
    assert task.outputs["Output"] == run_uri + "/report"
    _check_run(run_uri)
    with open(task.outputs["report_html"].path, encoding="utf-8") as f:
        assert '<table class="table1">' in f.read()
    with open(task.outputs["report_md"].path, encoding="utf-8") as f:
        assert "## Table 1" in f.read()
    assert task.outputs["metrics"].metadata["sft-grpo_accuracy"] == 0.625
