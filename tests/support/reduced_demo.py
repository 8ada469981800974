"""The reduced demo study (zero-shot, SFT, SFT->GRPO on 48 training and 8 test questions), run once per session
through kfp.local's subprocess runner: the pipeline test checks its layout and console, the container runner's test
compares its accuracy per arm with the same study run in the images."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ARMS = ("zero-shot", "sft", "sft-grpo")  # sft-grpo brings its starting arm, sft
# The perplexity model (a tiny LM each evaluate step would otherwise train) is left out: accuracy is compared.
SETTINGS = [
    "data.train_size=48", "data.test_size=8", "arms.sft.epochs=1", "arms.sft-grpo.max_steps=2",
    "evaluate.max_new_tokens=16", "evaluate.perplexity_model=null",
]  # fmt: skip
TASK_LINE = r"^\[[#.]{20}\] "  # the console's one line per task (medrl.console.TaskConsole)


def command(store: str, root: Path, *extra: str) -> list[str]:
    """`medrl run` of the reduced demo into `store` as run `test-run`, kfp.local's files in `root`."""
    return [
        sys.executable, "-m", "medrl", "run", "--preset", "demo", "--arms", "zero-shot,sft-grpo", "--store", store,
        "--run-id", "test-run", "--pipeline-root", str(root), *extra, *SETTINGS,
    ]  # fmt: skip


def answers(predictions: str) -> dict[str, str]:
    """predictions.jsonl's text -> {question id: completion}."""
    return {row["id"]: row["completion"] for row in map(json.loads, predictions.splitlines())}


@dataclass
class ReducedRun:
    out: subprocess.CompletedProcess
    run: Path  # the run folder (file store)

    def completions(self) -> dict[str, dict[str, str]]:
        """Each arm's generated text per test question."""
        return {arm: answers((self.run / "arms" / arm / "predictions.jsonl").read_text()) for arm in ARMS}

    def accuracy(self) -> dict[str, float]:
        return {
            arm: json.loads((self.run / "arms" / arm / "metrics.json").read_text())["metrics"]["accuracy"]["mean"]
            for arm in ARMS
        }


@pytest.fixture(scope="session")
def reduced_demo(tmp_path_factory) -> ReducedRun:
    """The reduced demo through the subprocess runner into a file store."""
    tmp = tmp_path_factory.mktemp("reduced-demo")
    out = subprocess.run(command(str(tmp / "runs"), tmp / "kfp"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return ReducedRun(out, tmp / "runs" / "demo" / "test-run")
