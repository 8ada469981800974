"""The semantic reward in real GRPO runs (TRL on the tiny model, SFT'd here until it writes <think> text) with the
openai judge against a real HTTP server on 127.0.0.1 (tests/support/judge_server.py, stand-in for a served 7B judge):
a judge that answers nothing stops training with an error naming the server, the model and the fix, and
`medrl train` exits with status 2 and commits no model; a judge that answers some completions and not others
lets training go on, and nothing of a prompt or a completion reaches the logs on the way."""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medrl import store
from medrl.config import load_config
from medrl.data.records import iter_jsonl, write_jsonl
from medrl.rewards.semantic import UnscorableError
from medrl.train import train_arm
from tests.support.judge_server import JudgeServer
from tests.support.tiny_runs import MARKERS, Capture, canary_dataset

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
JUDGE_MODEL = "BioMistral-7B"

# 48 steps of one reasoning sentence: greedy completions are then "<think>{RATIONALE}</think><answer>...", and at
# temperature 0.7 about a quarter of the samples hold <think> text, most of it that sentence (measured).
RATIONALE = "The bright lesion lies in the left lung."
SFT = """
arms:
  sft: {method: sft, learning_rate: 3.0e-3, max_steps: 48, per_device_batch_size: 16, grad_accum: 1, seed: 0,
        save_steps: 1000}
"""

GRPO = """
judge: {{backend: openai, url: "{url}", model: {model}, max_unscorable_fraction: {fraction}{extra}}}
arms:
  grpo: {{method: grpo, learning_rate: 1.0e-5, max_steps: {steps}, per_device_batch_size: 2, grad_accum: 1,
         num_generations: 4, max_completion_length: 40, temperature: 0.7, beta: 0.0, seed: 0, save_steps: 1000,
         rewards: [{rewards}]}}
"""


def grpo_yaml(url: str, steps: int = 4, fraction: float = 0.5, rewards: str = "{name: format}, {name: semantic}",
              **judge) -> str:  # fmt: skip
    extra = "".join(f", {k}: {v}" for k, v in judge.items())
    return GRPO.format(url=url, model=JUDGE_MODEL, fraction=fraction, extra=extra, steps=steps, rewards=rewards)


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed again: nothing listens there


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Synthetic questions whose text, image paths and patient fields carry markers (tests/support/tiny_runs.py),
    committed: `medrl train` takes committed datasets only."""
    raw = canary_dataset(tmp_path_factory.mktemp("canary") / "raw", train=64, test=8)
    rows = list(iter_jsonl(raw / "train.jsonl"))
    for row in rows:
        row["meta"]["rationale"] = RATIONALE  # one sentence to learn: a few SFT steps teach the <think> part
    write_jsonl(raw / "train.jsonl", rows)
    out = tmp_path_factory.mktemp("judge-data") / "canary"
    with store.commit_dir(store.normalize(str(out))) as staging:
        for item in raw.iterdir():
            os.replace(item, staging / item.name)
    return out


@pytest.fixture(scope="module")
def thinker(tiny_model, data, tmp_path_factory) -> Path:
    """The tiny model after a short SFT: it writes <think> text, so the semantic reward has reasoning to judge."""
    root = tmp_path_factory.mktemp("thinker")
    train_arm(load_config(text=SFT), "sft", data, str(tiny_model), root / "model", root / "work")
    return root / "model"


def test_medrl_train_stops_on_a_dead_judge_with_its_url_model_and_fix(thinker, data, tmp_path):
    """Nothing listens at judge.url; default retries, backoff and breaker. The run stops at its first step with
    exit status 2, no traceback, and no model committed."""
    url = closed_port_url()
    config = tmp_path / "study.yaml"
    config.write_text(grpo_yaml(url, steps=20))
    out = tmp_path / "grpo-model"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "medrl", "train", "--config", str(config), "--arm", "grpo", "--data", str(data),
         "--out", str(out), "--init", str(thinker), "--work", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert done.returncode == 2, done.stderr[-3000:]
    error = done.stderr
    assert "answered none of the" in error and "completions it was asked about" in error, error[-3000:]
    assert f"openai judge at {url} (judge.url), model {JUDGE_MODEL} (judge.model)" in error
    assert f"nothing answers at {url}: start the judge server" in error
    assert "Traceback" not in error
    assert not store.exists(store.normalize(str(out)))  # nothing committed
    assert not any(m in error + done.stdout for m in MARKERS)
    assert elapsed < 180, elapsed  # process start and model load included; the judge's part is seconds
    steps = sorted((tmp_path / "work").rglob("train_log.jsonl"))
    assert not steps or not steps[0].read_text().strip()  # no training step was logged


@pytest.mark.parametrize(
    ("mode", "judge", "fix"),
    [
        ("503", {}, "answers 429/5xx"),
        ("hang", {"timeout_s": 0.5}, "did not answer within judge.timeout_s=0.5"),
        ("echo", {"guided": "none"}, "answers, but not with a verdict"),
    ],
)
def test_grpo_stops_within_seconds_when_the_judge_answers_nothing(mode, judge, fix, thinker, data, tmp_path):
    with JudgeServer(mode=mode) as server:
        cfg = load_config(text=grpo_yaml(server.url, steps=20, fraction=1.0, **judge))
        start = time.monotonic()
        with pytest.raises(UnscorableError) as err:
            train_arm(cfg, "grpo", data, str(thinker), tmp_path / "out", tmp_path / "work")
        elapsed = time.monotonic() - start
        assert server.requests > 0  # the model wrote reasoning, and the judge was asked about it
    message = str(err.value)
    assert f"openai judge at {server.url} (judge.url), model {JUDGE_MODEL} (judge.model)" in message
    assert fix in message and "answered none of the" in message
    assert elapsed < 60, elapsed  # the model's load and the first generation included
    assert not (tmp_path / "out" / "model.safetensors").exists()


class EverySecondRequest:
    """Reply text for the stand-in server: Yes to every second request, prose that is no verdict to the others, so
    each step of four completions gets verdicts for some (training goes on) and none for the rest. Counted, not
    timed: the machine's load must not decide which requests get a verdict."""

    def __init__(self):
        self.requests = itertools.count()

    def __call__(self, prompt: str) -> str:
        return "Yes" if next(self.requests) % 2 == 0 else "It depends on the image."


def test_judge_traffic_leaves_no_prompt_or_completion_in_the_logs(thinker, data, tmp_path, capfd):
    """The semantic reward alone, a judge that says Yes to the first reasoning of each step and answers prose to
    the others (so a step is never wholly unjudged and training goes on): those completions' every reward is None,
    which makes TRL log the whole prompt and completion (what NoSampleText replaces); the judge's own warnings
    count outcomes only. Markers in the questions, image paths and
    patient fields, and every reasoning text the judge was sent, must appear in no log line and on no output."""
    capture = Capture()
    loggers = [logging.getLogger(), logging.getLogger("trl"), logging.getLogger("medrl"), logging.getLogger("httpx")]
    levels = [lg.level for lg in loggers]
    logging.getLogger().addHandler(capture)
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    try:
        with JudgeServer(mode="ok") as server:
            server.reply = EverySecondRequest()
            text = grpo_yaml(server.url, steps=4, fraction=1.0, rewards="{name: semantic}")
            cfg = load_config(text=text.replace("per_device_batch_size: 2", "per_device_batch_size: 4"))
            stopped = None
            try:
                train_arm(cfg, "grpo", data, str(thinker), tmp_path / "out", tmp_path / "work")
            except UnscorableError as err:
                # A step in which the model reasoned once, and that once got prose, has no verdict at all: the run
                # stops by rule. The logs up to then are what this test reads.
                stopped = err
            sent = [b["messages"][0]["content"] for b in server.bodies]
    finally:
        logging.getLogger().removeHandler(capture)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
    out, err = capfd.readouterr()
    text = "\n".join(capture.lines) + out + err
    assert sent, "the judge was never asked: the model wrote no reasoning"
    assert "every reward of a completion was None (unscorable); text not logged" in text  # TRL's warning, filtered
    assert f"judge openai:{JUDGE_MODEL}:" in text and "prompts unscorable" in text  # the judge's own warning
    assert not any(m in text for m in MARKERS)
    judged = {field.strip() for prompt in sent for field in _fields(prompt)}
    leaked = [t for t in judged if len(t) >= 12 and t in text]
    assert not leaked, leaked[:3]
    if stopped is None:
        assert (tmp_path / "out" / "model.safetensors").is_file()  # half the verdicts missing: training went on
    else:
        assert MARKERS[0] not in str(stopped) and not any(t in str(stopped) for t in judged if len(t) >= 12)


def _fields(prompt: str) -> list[str]:
    from medrl.judge.templates import judged_fields

    return judged_fields(prompt)
