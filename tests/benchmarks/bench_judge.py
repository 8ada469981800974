"""Judge speed: 512 judgements against the stand-in vLLM server (its own process on 127.0.0.1, answering after
50 ms). Concurrent calls must be at least 10x faster than one at a time, and a second pass from the cache at
least 100x faster than the first. Run with `make bench`; ratios are measured side by side in one run."""

import subprocess
import sys
import time

import pytest

from medrl.config import OpenAIJudgeConfig
from medrl.judge import build_judge, semantic_prompt
from medrl.judge.openai import OpenAIJudge

N = 512
DELAY_S = 0.05


@pytest.fixture(scope="module")
def server_url():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.judge_server", "--mode", "delay", "--delay", str(DELAY_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    port = int(proc.stdout.readline())
    yield f"http://127.0.0.1:{port}/v1"
    proc.stdin.close()
    proc.wait(10)


def _timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _cfg(url: str, concurrency: int) -> OpenAIJudgeConfig:
    return OpenAIJudgeConfig(url=url, model="stand-in", concurrency=concurrency, timeout_s=10)


def test_concurrent_judging_is_10x_faster_than_one_at_a_time(server_url):
    one_at_a_time = OpenAIJudge(_cfg(server_url, 1))
    concurrent = OpenAIJudge(_cfg(server_url, 64))
    serial_s, serial = _timed(one_at_a_time.yes_no, [semantic_prompt(f"serial lesion {i}") for i in range(N)])
    parallel_s, parallel = _timed(concurrent.yes_no, [semantic_prompt(f"parallel lesion {i}") for i in range(N)])
    assert serial == parallel == [True] * N
    ratio = serial_s / parallel_s
    print(f"\njudge, {N} calls at {DELAY_S * 1000:.0f} ms: one at a time {serial_s:.2f} s, "
          f"64 concurrent {parallel_s:.2f} s -> {ratio:.1f}x (goal >= 10x)")  # fmt: skip
    assert ratio >= 10


def test_second_pass_from_the_cache_is_100x_faster(server_url):
    judge = build_judge(_cfg(server_url, 64))
    prompts = [semantic_prompt(f"cached lesion {i}") for i in range(N)]
    first_s, first = _timed(judge.yes_no, prompts)
    second_s, second = _timed(judge.yes_no, prompts)
    assert first == second == [True] * N
    assert judge.stats()["cache"] == {"hits": N, "misses": N}
    ratio = first_s / second_s
    print(f"\njudge cache, {N} calls: first pass {first_s:.3f} s, second pass {second_s * 1000:.1f} ms "
          f"-> {ratio:.0f}x (goal >= 100x)")  # fmt: skip
    assert ratio >= 100
