"""A judge served behind an OpenAI-compatible API (vLLM serving BioMistral or Mistral-7B-Instruct in the cluster).

Calls are concurrent (bounded), time-limited, retried with backoff that honours Retry-After, and guarded by a
circuit breaker; every prompt ends in exactly one counted outcome, and no exception reaches the caller.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from medrl.config import OpenAIJudgeConfig
from medrl.judge.breaker import CircuitBreaker
from medrl.judge.templates import SCORES, YES_NO, parse_score, parse_yes_no
from medrl.metrics import judge as prom
from medrl.metrics.outcomes import OUTCOMES

log = logging.getLogger("medrl")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per judge call would drown the run's log

RETRYABLE = {408, 425, 429, *range(500, 600)}
CONNECTIONS_PER_CLIENT = 8
REPLY_TOKENS = 8  # "Yes", "No" or "10" with room for a stray space or full stop when unguided


def run_sync(coro):
    """Run a coroutine to completion from synchronous code, also when this thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def retry_after_s(value: str | None) -> float | None:
    """Seconds a Retry-After header asks for (delta-seconds or an HTTP date); None when absent or unreadable.

    >>> retry_after_s("2"), retry_after_s(None), retry_after_s("soon")
    (2.0, None, None)
    """
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _names_guidance(response: httpx.Response) -> bool:
    """Whether an error reply is about the guided-choice field (and not, say, a prompt that is too long)."""
    text = response.text[:2000].lower()
    return "structured_outputs" in text or "guided" in text


class OpenAIJudge:
    proxy = False

    def __init__(self, cfg: OpenAIJudgeConfig):
        base = cfg.url.rstrip("/")
        base = base if base.endswith("/v1") else base + "/v1"
        self.url = base
        self.endpoint = base + ("/chat/completions" if cfg.endpoint == "chat" else "/completions")
        self.cfg = cfg
        self.name = f"openai:{cfg.model}"
        self.guided = cfg.guided
        self.breaker = CircuitBreaker(cfg.breaker_failures, cfg.breaker_reset_s)
        self.outcomes: Counter[str] = Counter(dict.fromkeys(OUTCOMES, 0))
        self.last: Counter[str] = Counter()  # outcomes of the last batch, for error messages
        self.attempts = 0
        self.retries = 0
        self._random = random.Random()
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ the Judge interface

    def yes_no(self, prompts: list[str]) -> list[bool | None]:
        return self._judge(prompts, YES_NO, parse_yes_no)

    def score(self, prompts: list[str]) -> list[int | None]:
        return self._judge(prompts, SCORES, parse_score)

    def stats(self) -> dict:
        return {
            "outcomes": dict(self.outcomes),
            "attempts": self.attempts,
            "retries": self.retries,
            "breaker": self.breaker.snapshot(),
            "guided": self.guided,
        }

    def explain(self, counts: Counter[str] | None = None) -> str:
        """The server, the model and what went wrong (the last batch's outcomes, or `counts`), with the fix: for
        the message that stops a run. Empty when nothing went wrong."""
        counts = self.last if counts is None else counts
        failed = {k: v for k, v in counts.items() if v and k != "ok"}
        if not failed:
            return ""
        url, model = self.url, self.cfg.model
        causes = [k for k, _ in Counter(failed).most_common() if k != "breaker_open"] or ["breaker_open"]
        fixes = {
            "connection_error": f"nothing answers at {url}: start the judge server (e.g. vLLM serving {model}) or "
            "correct judge.url",
            "timeout": f"the server at {url} did not answer within judge.timeout_s={self.cfg.timeout_s}: check that "
            "it is up and not overloaded, or raise judge.timeout_s",
            "http_error": f"the server at {url} answers 429/5xx: check its health and load",
            "rejected": f"the server at {url} rejects the requests (4xx): check that judge.model={model} is a "
            f"model it serves (GET {url}/models) and judge.endpoint={self.cfg.endpoint}",
            "garbage": f"what answers at {url} is not an OpenAI-compatible API: check judge.url (the /v1 base of "
            "a vLLM or other OpenAI-compatible server)",
            "unparsable": f"the server at {url} answers, but not with a verdict: check that judge.model={model} is "
            f"an instruction model, judge.endpoint={self.cfg.endpoint} and judge.guided={self.cfg.guided}",
            "breaker_open": "the circuit breaker is open after repeated failures (earlier log lines say which)",
            "internal_error": "a fault in medrl's judge client (the log names its type)",
        }
        seen = ", ".join(f"{k} {v}" for k, v in Counter(failed).most_common())
        return f"openai judge at {url} (judge.url), model {model} (judge.model): {seen}; {fixes[causes[0]]}"

    def _judge(self, prompts: list[str], choices: tuple[str, ...], parse) -> list:
        if not prompts:
            return []
        try:
            replies = run_sync(self._ask_all(list(prompts), choices))
        except Exception as err:  # a bug here must not take training down: every prompt is unscorable
            log.error(
                "judge %s: batch failed (%s); its %d prompts are unscorable",
                self.name,
                type(err).__name__,
                len(prompts),
            )
            replies = [("internal_error", None)] * len(prompts)
        values: list[bool | int | None] = []  # Yes/No verdicts or 1..10 scores; None: unscorable
        batch: Counter[str] = Counter()
        for outcome, reply in replies:
            value = parse(reply) if outcome == "ok" else None
            if outcome == "ok" and value is None:
                outcome = "unparsable"
            batch[outcome] += 1
            values.append(value)
        self.outcomes.update(batch)
        self.last = batch
        if batch["ok"] < len(prompts):
            failed = ", ".join(f"{k} {v}" for k, v in batch.items() if k != "ok")
            log.warning(
                "judge %s: %d of %d prompts unscorable (%s)",
                self.name,
                len(prompts) - batch["ok"],
                len(prompts),
                failed,
            )
        return values

    # ------------------------------------------------------------------ HTTP

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _body(self, prompt: str, choices: tuple[str, ...]) -> dict:
        body: dict = {"model": self.cfg.model, "max_tokens": REPLY_TOKENS, "temperature": 0.0}
        if self.cfg.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.guided == "structured_outputs":
            body["structured_outputs"] = {"choice": list(choices)}
        elif self.guided == "guided_choice":
            body["guided_choice"] = list(choices)
        return body

    def _reply_text(self, response: httpx.Response) -> str | None:
        """The generated text of an OpenAI reply, or None when the body is not one."""
        try:
            choice = response.json()["choices"][0]
            text = choice["message"]["content"] if self.cfg.endpoint == "chat" else choice["text"]
        except Exception:  # any malformed body is garbage, whatever its shape
            return None
        return text if isinstance(text, str) else None

    async def _ask_all(self, prompts: list[str], choices: tuple[str, ...]) -> list[tuple[str, str | None]]:
        """`concurrency` workers take prompts in turn. Connections are spread over several small clients:
        httpcore's pool does work quadratic in its size on every request (measured: 64 connections in one
        pool made 512 calls 4x slower than 16)."""
        n = min(self.cfg.concurrency, len(prompts))
        per_client = min(n, CONNECTIONS_PER_CLIENT)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        timeout = httpx.Timeout(self.cfg.timeout_s)
        if self._tls is None:
            self._tls = ssl.create_default_context()  # once per judge: building one costs ~50 ms
        clients = [
            httpx.AsyncClient(timeout=timeout, limits=limits, headers=self._headers(), verify=self._tls)
            for _ in range(-(-n // per_client))
        ]
        results: list[tuple[str, str | None]] = [("connection_error", None)] * len(prompts)
        todo = iter(range(len(prompts)))

        async def worker(client: httpx.AsyncClient) -> None:
            for i in todo:  # one shared iterator: each prompt goes to exactly one worker
                results[i] = await self._ask(client, prompts[i], choices)

        try:
            await asyncio.gather(*(worker(clients[w // per_client]) for w in range(n)))
        finally:
            for client in clients:
                await client.aclose()
        return results

    async def _ask(self, client: httpx.AsyncClient, prompt: str, choices: tuple[str, ...]) -> tuple[str, str | None]:
        """One prompt: attempts until an answer, a final failure, or the breaker says stop."""
        last, attempt = "breaker_open", 0
        while True:
            while self.breaker.waiting_on_probe():
                await asyncio.sleep(0.005)
            if not self.breaker.allow():
                return last, None
            self.attempts += 1
            self.retries += attempt > 0
            started = time.monotonic()
            outcome, reply, wait = await self._attempt(client, prompt, choices)
            prom.judge_request(outcome, time.monotonic() - started)
            if outcome == "guided_rejected":
                continue  # asked again at once, without the guidance this server does not know
            if outcome in ("ok", "garbage", "rejected"):
                return outcome, reply
            last = outcome
            if attempt >= self.cfg.retries:
                return last, None
            if wait is None:
                wait = min(self.cfg.max_backoff_s, self.cfg.backoff_s * 2**attempt) * self._random.uniform(0.5, 1.0)
            elif wait > self.cfg.max_backoff_s:
                return last, None  # the server asks for a longer pause than we may wait: give up, never sooner
            attempt += 1
            await asyncio.sleep(wait)

    async def _attempt(
        self, client: httpx.AsyncClient, prompt: str, choices: tuple[str, ...]
    ) -> tuple[str, str | None, float | None]:
        """(outcome, reply text, Retry-After seconds) of one HTTP call; the breaker hears of every call."""
        try:
            async with asyncio.timeout(self.cfg.timeout_s):
                response = await client.post(self.endpoint, json=self._body(prompt, choices))
        except (TimeoutError, httpx.TimeoutException):
            self.breaker.failure()
            return "timeout", None, None
        except Exception:  # refused, reset, protocol errors: the server is not answering
            self.breaker.failure()
            return "connection_error", None, None
        except BaseException:  # cancelled: never leave a half-open probe outstanding
            self.breaker.failure()
            raise
        status = response.status_code
        if status in RETRYABLE:
            self.breaker.failure()
            return "http_error", None, retry_after_s(response.headers.get("retry-after"))
        self.breaker.success()  # anything else is an answer: the server is up
        if status == 200:
            reply = self._reply_text(response)
            return ("ok", reply, None) if reply is not None else ("garbage", None, None)
        if status in (400, 422) and self.guided != "none" and _names_guidance(response):
            log.warning("judge %s: the server rejects %s; asking without guided choice", self.name, self.guided)
            self.guided = "none"
            return "guided_rejected", None, None
        return "rejected", None, None
