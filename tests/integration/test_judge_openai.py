"""The openai judge against a real HTTP server on 127.0.0.1 (tests/support/judge_server.py, the stand-in for vLLM):
answers, guided choice, and the faults a served judge has (503s, hangs, garbage, late replies, refused
connections). No exception escapes, the breaker opens and closes again, and every outcome count is exact."""

import asyncio
import socket
import time

import pytest

from medrl.config import OpenAIJudgeConfig
from medrl.judge import build_judge, semantic_prompt, thinking_prompt
from medrl.judge.openai import OpenAIJudge
from tests.support.judge_server import JudgeServer


@pytest.fixture
def server():
    with JudgeServer() as srv:
        yield srv


def make(url: str, **settings) -> OpenAIJudge:
    base = {"url": url, "model": "stand-in", "timeout_s": 2.0, "backoff_s": 0.01}
    return OpenAIJudge(OpenAIJudgeConfig(**{**base, **settings}))


def prompts(n: int, tag: str = "") -> list[str]:
    return [semantic_prompt(f"The lesion {tag}{i} is in the left lung.") for i in range(n)]


def outcomes(judge: OpenAIJudge) -> dict:
    return {k: v for k, v in judge.stats()["outcomes"].items() if v}


def test_answers_with_guided_choice(server):
    judge = make(server.url, concurrency=4)
    assert judge.yes_no(prompts(5)) == [True] * 5
    assert judge.score([thinking_prompt("Where?", "left lung", f"step {i}") for i in range(3)]) == [7, 7, 7]
    assert outcomes(judge) == {"ok": 8}
    assert server.requests == 8
    yes_no, score = server.bodies[0], server.bodies[-1]
    assert yes_no["structured_outputs"] == {"choice": ["Yes", "No"]}
    assert score["structured_outputs"] == {"choice": [str(i) for i in range(1, 11)]}
    assert yes_no["temperature"] == 0.0 and yes_no["model"] == "stand-in"
    assert yes_no["messages"][0]["content"].startswith("Evaluate the following medical statement")


def test_completions_endpoint_older_vllm_field_and_api_key(server, monkeypatch):
    monkeypatch.setenv("MEDRL_JUDGE_API_KEY", "s3cret")
    judge = make(server.url.removesuffix("/v1"), endpoint="completions", guided="guided_choice")
    assert judge.yes_no(prompts(2)) == [True, True]
    body = server.bodies[0]
    assert body["guided_choice"] == ["Yes", "No"] and "structured_outputs" not in body
    assert body["prompt"].endswith("Answer:")
    assert server.headers[0]["authorization"] == "Bearer s3cret"


def test_server_without_guided_choice_is_asked_again_without_it(server):
    server.mode = "reject_guided"
    judge = make(server.url, concurrency=1)
    assert judge.yes_no(prompts(4)) == [True] * 4
    assert outcomes(judge) == {"ok": 4}
    assert judge.stats()["guided"] == "none"
    assert server.requests == 5  # one rejected, then four plain requests
    assert "structured_outputs" not in server.bodies[-1]


def test_503_for_every_call_opens_the_breaker_with_exact_counts(server):
    server.mode = "503"
    judge = make(server.url, concurrency=1, retries=2, breaker_failures=5)
    assert judge.yes_no(prompts(10)) == [None] * 10
    # Prompt 1: three failed attempts. Prompt 2: two more open the breaker. Prompts 3-10 are never sent.
    assert outcomes(judge) == {"http_error": 2, "breaker_open": 8}
    assert server.requests == 5
    stats = judge.stats()
    assert (stats["attempts"], stats["retries"]) == (5, 3)
    assert stats["breaker"] == {"state": "open", "opened": 1, "closed": 0}


def test_503_with_many_calls_in_flight_stops_soon_after_the_breaker_opens(server):
    server.mode = "503"
    judge = make(server.url, concurrency=8, retries=3, breaker_failures=5)
    assert judge.score([thinking_prompt("q", "r", f"t{i}") for i in range(40)]) == [None] * 40
    counts = outcomes(judge)
    assert sum(counts.values()) == 40 and set(counts) <= {"http_error", "breaker_open"}
    assert counts["breaker_open"] >= 40 - 8
    assert server.requests <= 5 + 8 - 1  # calls already out when it opened, and nothing after


def test_hanging_server_times_out_and_opens_the_breaker(server):
    server.mode = "hang"
    judge = make(server.url, concurrency=1, timeout_s=0.2, retries=1, breaker_failures=3)
    start = time.monotonic()
    assert judge.yes_no(prompts(4)) == [None] * 4
    assert time.monotonic() - start < 3.0
    assert outcomes(judge) == {"timeout": 2, "breaker_open": 2}
    assert server.requests == 3


@pytest.mark.parametrize(("mode", "outcome"), [("garbage_json", "garbage"), ("garbage_text", "unparsable")])
def test_garbage_replies_are_unscorable_not_retried(server, mode, outcome):
    server.mode = mode
    judge = make(server.url, concurrency=3, retries=3, breaker_failures=2)
    assert judge.yes_no(prompts(6)) == [None] * 6
    assert judge.score([thinking_prompt("q", "r", "t")]) == [None]
    assert outcomes(judge) == {outcome: 7}
    assert server.requests == 7
    assert judge.stats()["breaker"]["state"] == "closed"  # the server answers: it is not down


def test_delayed_replies_within_the_timeout_are_answers(server):
    server.mode, server.delay_s = "delay", 0.15
    judge = make(server.url, concurrency=4, timeout_s=2.0)
    assert judge.yes_no(prompts(8)) == [True] * 8
    assert outcomes(judge) == {"ok": 8}


def test_delayed_replies_past_the_timeout_are_timeouts(server):
    server.mode, server.delay_s = "delay", 1.0
    judge = make(server.url, concurrency=4, timeout_s=0.2, retries=0, breaker_failures=100)
    assert judge.yes_no(prompts(4)) == [None] * 4
    assert outcomes(judge) == {"timeout": 4}
    assert server.requests == 4


def test_breaker_opens_then_half_opens_and_closes_again(server):
    server.mode = "503"
    judge = make(server.url, concurrency=4, retries=0, breaker_failures=3, breaker_reset_s=0.4)
    assert judge.yes_no(prompts(6, "a")) == [None] * 6
    assert judge.stats()["breaker"]["state"] == "open"
    sent = server.requests
    server.mode = "ok"
    assert judge.yes_no(prompts(4, "b")) == [None] * 4  # still open: nothing is sent
    assert server.requests == sent
    time.sleep(0.45)
    assert judge.yes_no(prompts(8, "c")) == [True] * 8  # one probe, then everyone
    assert judge.stats()["breaker"] == {"state": "closed", "opened": 1, "closed": 1}
    assert server.requests == sent + 8
    counts = outcomes(judge)
    assert counts["ok"] == 8 and counts["breaker_open"] == 4 + (6 - counts["http_error"])


def test_retry_after_is_honoured(server):
    server.script = ["503-retry-after", "ok"]
    server.retry_after = "1"
    judge = make(server.url, concurrency=1, retries=2, backoff_s=0.0)
    assert judge.yes_no(prompts(1)) == [True]
    assert server.arrivals[1] - server.arrivals[0] >= 0.95
    assert judge.stats()["retries"] == 1 and outcomes(judge) == {"ok": 1}


def test_retry_after_longer_than_we_may_wait_gives_up(server):
    server.mode, server.retry_after = "503-retry-after", "120"
    judge = make(server.url, concurrency=1, retries=5, max_backoff_s=2.0, breaker_failures=50)
    assert judge.yes_no(prompts(2)) == [None, None]
    assert outcomes(judge) == {"http_error": 2}
    assert server.requests == 2


def test_refused_connections_are_counted():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    judge = make(f"http://127.0.0.1:{port}/v1", concurrency=2, retries=1, breaker_failures=100)
    assert judge.yes_no(prompts(3)) == [None] * 3
    assert outcomes(judge) == {"connection_error": 3}
    assert judge.stats()["attempts"] == 6


def test_works_when_called_from_inside_an_event_loop(server):
    judge = make(server.url)

    async def inside():
        return judge.yes_no(prompts(3))

    assert asyncio.run(inside()) == [True] * 3


def test_cached_second_pass_sends_nothing(server):
    judge = build_judge(OpenAIJudgeConfig(url=server.url, model="stand-in", concurrency=8))
    batch = prompts(16)
    assert judge.yes_no(batch) == judge.yes_no(batch) == [True] * 16
    assert server.requests == 16
    assert judge.stats()["cache"] == {"hits": 16, "misses": 16}


# ------------------------------------------------------------------ the semantic reward stops on a dead judge

REASONED = [f"<think>The opacity {i} lies in the right lower lobe.</think><answer>A</answer>" for i in range(4)]
NO_REASONING = ["<answer>B</answer>"] * 12  # not asked: they must not dilute the judge's failures


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed again: nothing listens there


@pytest.mark.parametrize(
    ("mode", "settings", "fix"),
    [
        ("refused", {}, "nothing answers at {url}: start the judge server"),
        ("503", {}, "answers 429/5xx"),
        ("hang", {"timeout_s": 0.3}, "did not answer within judge.timeout_s=0.3"),
        ("echo", {"guided": "none"}, "answers, but not with a verdict"),
        ("garbage_json", {}, "is not an OpenAI-compatible API"),
    ],
)
def test_a_judge_that_answers_nothing_stops_the_semantic_reward_within_seconds(mode, settings, fix):
    """Default retry, backoff and breaker settings (but the hang's timeout): the error comes in seconds, names the
    server and the model, and says what to fix."""
    from medrl.rewards.semantic import SemanticReward, UnscorableError

    server = None if mode == "refused" else JudgeServer(mode=mode).start()
    url = closed_port_url() if server is None else server.url
    try:
        judge = build_judge(OpenAIJudgeConfig(url=url, model="BioMistral-7B", **settings))
        reward = SemanticReward(judge, max_unscorable_fraction=0.5)
        start = time.monotonic()
        with pytest.raises(UnscorableError) as err:
            reward(REASONED + NO_REASONING)
        assert time.monotonic() - start < 10.0
    finally:
        if server is not None:
            server.stop()
    message = str(err.value)
    assert "answered none of the 4 completions it was asked about" in message
    assert f"at {url} (judge.url), model BioMistral-7B (judge.model)" in message
    assert fix.format(url=url) in message
    assert "lobe" not in message  # no judged text in the error


def test_an_echoing_server_gives_no_verdict():
    """A server that sends the request back: the prompt holds 'Yes', 'No' and numbers, none of them a verdict."""
    with JudgeServer(mode="echo") as server:
        judge = make(server.url, guided="none")
        assert judge.yes_no(prompts(3)) == [None] * 3
        assert judge.score([thinking_prompt("Is there 1 lesion?", "Yes, 1", "I see 1 lesion, 8 of 10 signs.")]) == [
            None
        ]
        assert outcomes(judge) == {"unparsable": 4}
        assert server.bodies[0]["messages"][0]["content"].startswith("Evaluate the following medical statement")
