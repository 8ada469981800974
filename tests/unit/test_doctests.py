"""Run the examples in docstrings, so that they stay true."""

import doctest
import importlib

import pytest

MODULES = [
    "medrl.rewards.basic",
    "medrl.console",
    "medrl.rewards.parse",
    "medrl.data.prompt",
    "medrl.report.arm",
    "medrl.report.build",
    "medrl.models.tiny",
    "medrl.judge.templates",
    "medrl.judge.openai",
    "medrl.evaluate.accuracy",
    "medrl.evaluate.stats",
    "medrl.evaluate.generate",
    "medrl.evaluate.score",
    "medrl.report.figures",
    "medrl.rewards.grounding",
    "medrl.rewards.report_quality",
    "medrl.evaluate.cxr",
    "medrl.data.cxr.common",
    "medrl.data.cxr.dicom",
    "medrl.data.cxr.mimic_cxr",
    "medrl.data.cxr.vindr_cxr",
    "medrl.rewards.length",
    "medrl.rewards.semantic",
    "medrl.train.pairs",
    "medrl.store.checkpoints",
    "medrl.study",
    "medrl.cluster.entrypoint",
    "medrl.rewards",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0, f"{name} has no docstring examples"
    assert result.failed == 0
