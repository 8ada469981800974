"""Prometheus metrics: training's /metrics (fed from TRL's logs), the judge's counters, batch stages' pushes.

Names start with `medrl_`, use base units, counters end in `_total`. Labels are bounded (arm, reward,
outcome); a run id is only a Pushgateway grouping key. Nothing read from a record ever becomes a label.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.exposition import (
    ThreadingWSGIServer,
    choose_encoder,
    delete_from_gateway,
    gzip_accepted,
    push_to_gateway,
)

from medrl.errors import MedrlError
from medrl.judge.outcomes import OUTCOMES

log = logging.getLogger("medrl.metrics")

PORT_ENV = "MEDRL_METRICS_PORT"
ADDR_ENV = "MEDRL_METRICS_ADDR"
PUSHGATEWAY_ENV = "MEDRL_PUSHGATEWAY_URL"
RETENTION_ENV = "MEDRL_PUSHGATEWAY_RETENTION_HOURS"
DEFAULT_RETENTION_HOURS = 168.0

disable_created_metrics()  # no `*_created` series: Prometheus 2 ignores them, and they double a push's size
REGISTRY = CollectorRegistry()
ProcessCollector(namespace="medrl", registry=REGISTRY)  # medrl_process_cpu_seconds_total, ..._resident_memory_bytes


class MetricsError(MedrlError, RuntimeError):
    """Metrics cannot be served; the message names the setting and the fix."""


def _arm_gauge(name: str, doc: str) -> Gauge:
    return Gauge(name, doc, ["arm"], registry=REGISTRY)


# ------------------------------------------------------------------------------------------------ training

FROM_LOGS: dict[str, Gauge] = {
    "reward": _arm_gauge("medrl_train_reward", "Mean total (weighted) reward of the last logged step's completions."),
    "reward_std": _arm_gauge("medrl_train_reward_std", "Standard deviation of the total reward within groups."),
    "frac_reward_zero_std": _arm_gauge(
        "medrl_train_zero_std_group_ratio",
        "Fraction of prompt groups whose completions all got the same reward (no learning signal).",
    ),
    "kl": _arm_gauge("medrl_train_kl", "Mean per-token KL divergence from the reference model (absent when beta=0)."),
    "entropy": _arm_gauge("medrl_train_entropy_nats", "Mean per-token entropy of the policy, in nats."),
    "completions/mean_length": _arm_gauge(
        "medrl_train_completion_length_mean_tokens", "Mean length of sampled completions, in tokens."
    ),
    "completions/max_length": _arm_gauge(
        "medrl_train_completion_length_max_tokens", "Longest sampled completion of the step, in tokens."
    ),
    "completions/clipped_ratio": _arm_gauge(
        "medrl_train_completion_clipped_ratio", "Fraction of completions cut at max_completion_length."
    ),
    "learning_rate": _arm_gauge("medrl_train_learning_rate", "Learning rate of the last optimizer step."),
    "loss": _arm_gauge("medrl_train_loss", "Training loss averaged over the last logging interval."),
    "grad_norm": _arm_gauge("medrl_train_grad_norm", "Gradient norm before clipping."),
}
REWARD_FUNCTION = Gauge(
    "medrl_train_reward_function",
    "Mean reward of one reward function (unweighted).",
    ["arm", "reward"],
    registry=REGISTRY,
)
REWARD_FUNCTION_STD = Gauge(
    "medrl_train_reward_function_std",
    "Standard deviation of one reward function.",
    ["arm", "reward"],
    registry=REGISTRY,
)
STEP_SECONDS = _arm_gauge(
    "medrl_train_step_seconds", "Wall-clock seconds of the last optimizer step, sampling included."
)
TOKENS_PER_SECOND = _arm_gauge("medrl_train_tokens_per_second", "Tokens (prompt and completion) processed per second.")
GLOBAL_STEP = _arm_gauge("medrl_train_global_step", "Optimizer steps done, counting those before a resume.")
MAX_STEPS = _arm_gauge("medrl_train_max_steps", "Optimizer steps the run will do in total.")
LAST_STEP = _arm_gauge(
    "medrl_train_last_step_timestamp_seconds", "Unix time of the last finished optimizer step (or of the start)."
)
RUNNING = _arm_gauge("medrl_train_running", "1 while the trainer runs, 0 once it has ended.")
GPU_ALLOCATED = _arm_gauge("medrl_train_gpu_memory_allocated_bytes", "GPU memory held by tensors (CUDA only).")
GPU_PEAK = _arm_gauge("medrl_train_gpu_memory_max_reserved_bytes", "Peak GPU memory reserved by the allocator (CUDA).")
STEPS = Counter("medrl_train_steps", "Optimizer steps finished by this process.", ["arm"], registry=REGISTRY)
SAMPLES = Counter(
    "medrl_train_samples",
    "Training samples processed by this process (completions for GRPO, examples for SFT).",
    ["arm"],
    registry=REGISTRY,
)

_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def safe_label(value: str) -> str:
    """Label values come from code and config (arm, reward function names); anything else becomes 'other'."""
    return value if _LABEL.fullmatch(value) else "other"


class TrainingRecorder:
    """Turns trainer events and TRL's log records into the training gauges and counters of one arm."""

    def __init__(self, arm: str):
        self.arm = safe_label(arm or "default")
        self._last_step = time.monotonic()
        self._tokens: tuple[float, float] | None = None  # (time, cumulative tokens) of the previous log record

    def begin(self, max_steps: int) -> None:
        RUNNING.labels(self.arm).set(1)
        MAX_STEPS.labels(self.arm).set(max_steps)
        LAST_STEP.labels(self.arm).set_to_current_time()
        STEPS.labels(self.arm)
        SAMPLES.labels(self.arm)
        self._last_step = time.monotonic()
        self._tokens = None
        EXPOSITION.invalidate()

    def step(self, global_step: int, samples: int) -> None:
        """A step finished, as the world's rank 0 records it: progress, and the counters summed over the run."""
        self.progress(global_step)
        STEPS.labels(self.arm).inc()
        SAMPLES.labels(self.arm).inc(samples)
        EXPOSITION.invalidate()

    def progress(self, global_step: int) -> None:
        """A step finished, as any node sees it: its time, the global step and this node's GPU memory."""
        now = time.monotonic()
        STEP_SECONDS.labels(self.arm).set(now - self._last_step)
        self._last_step = now
        GLOBAL_STEP.labels(self.arm).set(global_step)
        LAST_STEP.labels(self.arm).set_to_current_time()
        self._gpu()
        EXPOSITION.invalidate()

    def log(self, logs: dict) -> None:
        for key, value in logs.items():
            if not isinstance(value, int | float) or value != value:  # skip None, text and NaN
                continue
            if key in FROM_LOGS:
                FROM_LOGS[key].labels(self.arm).set(value)
            elif key.startswith("rewards/") and key.count("/") == 2:
                _, name, stat = key.split("/")
                target = {"mean": REWARD_FUNCTION, "std": REWARD_FUNCTION_STD}.get(stat)
                if target is not None:
                    target.labels(self.arm, safe_label(name)).set(value)
            elif key == "num_tokens":
                now = time.monotonic()
                if self._tokens is not None and now > self._tokens[0] and value >= self._tokens[1]:
                    TOKENS_PER_SECOND.labels(self.arm).set((value - self._tokens[1]) / (now - self._tokens[0]))
                self._tokens = (now, float(value))
        EXPOSITION.invalidate()

    def end(self) -> None:
        RUNNING.labels(self.arm).set(0)
        EXPOSITION.invalidate()

    def _gpu(self) -> None:
        import sys

        torch = sys.modules.get("torch")  # never import torch just for this
        if torch is not None and torch.cuda.is_available():
            GPU_ALLOCATED.labels(self.arm).set(torch.cuda.memory_allocated())
            GPU_PEAK.labels(self.arm).set(torch.cuda.max_memory_reserved())


# ------------------------------------------------------------------------------------------------ judge

# Every outcome a judge request can end in, and "other" for anything else.
JUDGE_OUTCOMES = (*OUTCOMES, "other")
JUDGE_REQUESTS = Counter(
    "medrl_judge_requests", "Judge requests by outcome: " + ", ".join(JUDGE_OUTCOMES), ["outcome"], registry=REGISTRY
)
JUDGE_LATENCY = Histogram(
    "medrl_judge_request_duration_seconds",
    "Seconds from sending a judge request to its answer (or failure).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
JUDGE_CACHE_HITS = Counter("medrl_judge_cache_hits", "Judge verdicts served from the cache.", registry=REGISTRY)
JUDGE_CACHE_MISSES = Counter("medrl_judge_cache_misses", "Judge verdicts not in the cache.", registry=REGISTRY)
JUDGE_VERDICTS = Counter(
    "medrl_judge_verdicts", "Completions judged, by outcome: scored or unscorable.", ["outcome"], registry=REGISTRY
)
JUDGE_UNSCORABLE = Gauge(
    "medrl_judge_unscorable_ratio", "Fraction of the last judged batch that could not be scored.", registry=REGISTRY
)
for _outcome in JUDGE_OUTCOMES:
    JUDGE_REQUESTS.labels(_outcome)
for _outcome in ("scored", "unscorable"):
    JUDGE_VERDICTS.labels(_outcome)


def judge_request(outcome: str, seconds: float) -> None:
    """Count one judge request and its latency. `outcome` is one of JUDGE_OUTCOMES (else counted as 'other')."""
    JUDGE_REQUESTS.labels(outcome if outcome in JUDGE_OUTCOMES else "other").inc()
    JUDGE_LATENCY.observe(max(seconds, 0.0))


def judge_cache(hit: bool, n: int = 1) -> None:
    """Count `n` cache lookups that hit (or missed)."""
    (JUDGE_CACHE_HITS if hit else JUDGE_CACHE_MISSES).inc(n)


def judge_verdicts(scored: int, unscorable: int) -> None:
    """Count a batch's verdicts; the unscorable ratio gauge shows this batch's share."""
    JUDGE_VERDICTS.labels("scored").inc(scored)
    JUDGE_VERDICTS.labels("unscorable").inc(unscorable)
    if scored + unscorable:
        JUDGE_UNSCORABLE.set(unscorable / (scored + unscorable))


JUDGE_COLLECTORS = (
    JUDGE_REQUESTS,
    JUDGE_LATENCY,
    JUDGE_CACHE_HITS,
    JUDGE_CACHE_MISSES,
    JUDGE_VERDICTS,
    JUDGE_UNSCORABLE,
)


# ------------------------------------------------------------------------------------------------ serving

RENDER_INTERVAL = 1.0  # seconds; Prometheus scrapes every 15-30 s, so only a faster scraper ever sees a cached body
_now = time.monotonic


class Exposition:
    """The /metrics body of a registry, rendered again only when the trainer recorded something (`invalidate()`, at
    most once per step and log record) or when the last rendering is `interval` seconds old (process and judge
    metrics); scrapes in between are answered with the same bytes.

    Rendering walks every collector and formats every sample in Python, holding the GIL that the training loop needs
    between its torch ops (0.4-0.8 ms of CPU for medrl's registry, measured on 2 cores): rendered per scrape, that
    cost grew with the scrape rate; now it is paid at most once per step (or per `interval`), however often scraped.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        interval: float = RENDER_INTERVAL,
        clock: Callable[[], float] = _now,
    ):
        self.registry = registry
        self.interval = interval
        self.clock = clock
        self.renders = 0  # how many times the registry was walked; a test reads it
        self._lock = threading.Lock()  # scrape threads only: the trainer's invalidate() never waits on it
        self._stale = True
        self._rendered_at = 0.0
        self._bodies: dict[tuple[str, bool], bytes] = {}

    def invalidate(self) -> None:
        """New values were recorded: the next scrape renders them (a flag, so the training loop never blocks)."""
        self._stale = True

    def body(self, accept: str | None = None, accept_encoding: str | None = None) -> tuple[bytes, list]:
        """The body and headers for a scrape with these Accept and Accept-Encoding headers."""
        encoder, content_type = choose_encoder(accept or "")
        compressed = gzip_accepted(accept_encoding or "")
        with self._lock:
            now = self.clock()
            if self._stale or now - self._rendered_at >= self.interval:
                self._stale = False  # before rendering: values recorded meanwhile make the next scrape render again
                self._rendered_at = now
                self._bodies.clear()
            key = (content_type, compressed)
            if key not in self._bodies:
                raw = self._bodies.get((content_type, False))
                if raw is None:
                    raw = self._bodies[(content_type, False)] = encoder(self.registry)
                    self.renders += 1
                self._bodies[key] = gzip.compress(raw) if compressed else raw
            output = self._bodies[key]
        headers = [("Content-Type", content_type)] + ([("Content-Encoding", "gzip")] if compressed else [])
        return output, headers

    def app(self, environ, start_response):
        """WSGI: GET any path answers the metrics (as prometheus_client's app does), other methods 405."""
        if environ["REQUEST_METHOD"] != "GET":
            start_response("405 Method Not Allowed", [("Allow", "GET")])
            return [b""]
        output, headers = self.body(environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"))
        start_response("200 OK", headers)
        return [output]


EXPOSITION = Exposition(REGISTRY)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        """No line per scrape on stderr."""


_server_lock = threading.Lock()
_server: ThreadingWSGIServer | None = None


def port_from_env() -> int | None:
    """The port of training's /metrics from MEDRL_METRICS_PORT (set by --metrics-port); None: do not serve."""
    text = os.environ.get(PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise MetricsError(
            f"--metrics-port / {PORT_ENV}={text!r}: give a TCP port number (e.g. 9400), or leave it unset"
        )
    return int(text)


def serve(port: int, addr: str | None = None) -> int:
    """Serve REGISTRY (through EXPOSITION) on http://addr:port/metrics from a daemon thread, once per process;
    returns the port."""
    global _server
    with _server_lock:
        if _server is not None:
            return _server.server_port
        addr = addr or os.environ.get(ADDR_ENV) or "0.0.0.0"
        try:
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
            server_class = type("MetricsServer", (ThreadingWSGIServer,), {"address_family": family})
            _server = make_server(addr, port, EXPOSITION.app, server_class, handler_class=_QuietHandler)
        except OSError as err:
            raise MetricsError(
                f"--metrics-port {port}: cannot listen on {addr}:{port} ({err.strerror}); choose a free port"
            ) from None
        threading.Thread(target=_server.serve_forever, name="medrl-metrics", daemon=True).start()
        log.info("serving metrics on http://%s:%d/metrics", addr, _server.server_port)
        return _server.server_port


def stop_serving() -> None:
    global _server
    with _server_lock:
        if _server is not None:
            _server.shutdown()
            _server.server_close()
            _server = None


# ------------------------------------------------------------------------------------------------ Pushgateway

_NAME = re.compile(r"[a-z][a-z0-9_]*")


def pushgateway_url() -> str | None:
    """MEDRL_PUSHGATEWAY_URL, e.g. http://pushgateway.monitoring:9091; unset: batch stages push nothing."""
    return os.environ.get(PUSHGATEWAY_ENV, "").strip() or None


def grouping(run_id: str, arm: str | None) -> dict[str, str]:
    key = {"run_id": safe_label(run_id)}
    if arm:
        key["arm"] = safe_label(arm)
    return key


class StageMetrics:
    """The gauges one batch stage pushes; the grouping key (job, run id, arm) labels them at the Pushgateway."""

    def __init__(self, stage: str, judge: bool = False):
        self.stage = stage
        self.registry = CollectorRegistry()
        if judge:
            for collector in JUDGE_COLLECTORS:
                self.registry.register(collector)

    def set(self, name: str, value: float | None, doc: str) -> None:
        """Set gauge `medrl_<name>`; None values (not measured) are left out."""
        if value is None:
            return
        if not _NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r}: use lowercase letters, digits and '_'")
        Gauge(f"medrl_{name}", doc, registry=self.registry).set(float(value))

    def prep(self, summary: dict) -> None:
        self.set("prep_source_rows", summary.get("rows"), "Rows read from the source.")
        self.set("prep_train_rows", summary.get("train"), "Rows in the prepared training split.")
        self.set("prep_test_rows", summary.get("test"), "Rows in the prepared test split.")
        self.set("prep_quarantined_rows", summary.get("quarantined"), "Rows set aside with a reason (quarantine).")

    def evaluation(self, metrics: dict, questions: int) -> None:
        """Each metric of an evaluation (mean, std, n, missing) as `medrl_eval_<metric>_<stat>`."""
        self.set("eval_questions", questions, "Test questions evaluated.")
        for key, summary in metrics.items():
            if not isinstance(summary, dict) or not _NAME.fullmatch(key):
                continue
            self.set(f"eval_{key}_mean", summary.get("mean"), f"Mean of {key} over the test questions.")
            self.set(f"eval_{key}_std", summary.get("std"), f"Population std of {key} over the test questions.")
            self.set(f"eval_{key}_missing", summary.get("missing"), f"Questions whose {key} could not be measured.")


@contextlib.contextmanager
def batch_stage(stage: str, run_id: str, arm: str | None = None, judge: bool = False) -> Iterator[StageMetrics]:
    """Time a batch stage and push its metrics to the Pushgateway when it ends (if one is configured).

    Grouping key: job `medrl_<stage>`, `run_id` (and `arm`). Pushing never fails the stage.
    """
    pushed = StageMetrics(stage, judge=judge)
    start, ok = time.time(), False
    try:
        yield pushed
        ok = True
    finally:
        pushed.set("stage_duration_seconds", time.time() - start, "Wall-clock seconds the stage ran.")
        pushed.set("stage_success", 1.0 if ok else 0.0, "1 if the stage finished, 0 if it failed.")
        pushed.set("stage_last_run_timestamp_seconds", time.time(), "Unix time the stage ended.")
        push(stage, pushed.registry, run_id, arm)


def push(stage: str, registry: CollectorRegistry, run_id: str, arm: str | None = None) -> bool:
    url = pushgateway_url()
    if not url:
        return False
    try:
        push_to_gateway(url, job=f"medrl_{stage}", registry=registry, grouping_key=grouping(run_id, arm), timeout=10)
        return True
    except Exception as err:  # metrics are an aid: a Pushgateway outage must not fail a study
        log.warning("metrics of stage %s not pushed to %s: %s", stage, PUSHGATEWAY_ENV, type(err).__name__)
        return False


def delete_run(run_id: str, arms: list[str] | tuple[str, ...] = ()) -> int:
    """Delete the Pushgateway groups of a run's batch stages (prep, report, and evaluate per arm)."""
    url = pushgateway_url()
    if not url:
        return 0
    groups = [("prep", None), ("report", None)] + [("evaluate", arm) for arm in arms]
    deleted = 0
    for stage, arm in groups:
        try:
            delete_from_gateway(url, job=f"medrl_{stage}", grouping_key=grouping(run_id, arm), timeout=10)
            deleted += 1
        except Exception as err:
            log.warning("metrics group of stage %s not deleted from %s: %s", stage, PUSHGATEWAY_ENV, type(err).__name__)
    return deleted


def retention_seconds() -> float:
    """How long a run's pushed groups stay: MEDRL_PUSHGATEWAY_RETENTION_HOURS (default a week)."""
    text = os.environ.get(RETENTION_ENV, "").strip()
    try:
        hours = float(text) if text else DEFAULT_RETENTION_HOURS
    except ValueError:
        hours = -1.0
    if not hours >= 0:
        raise MetricsError(f"{RETENTION_ENV}={text!r}: give the hours a run's metrics stay on the Pushgateway")
    return hours * 3600


def prune(max_age_seconds: float, now: float | None = None) -> int:
    """Delete medrl's Pushgateway groups last pushed more than `max_age_seconds` ago; returns how many.

    Groups are keyed by run id, so they would pile up. They are kept a while rather than deleted when a run ends:
    Prometheus must scrape them, and alerts on evaluation results need them to stay for their `for:` period.
    Pruning never fails the stage that calls it.
    """
    url = pushgateway_url()
    if not url:
        return 0
    base = url if "://" in url else f"http://{url}"
    try:
        with urllib.request.urlopen(f"{base.rstrip('/')}/api/v1/metrics", timeout=10) as reply:
            groups = json.loads(reply.read())["data"]
    except Exception as err:
        log.warning("metrics groups not listed from %s: %s", PUSHGATEWAY_ENV, type(err).__name__)
        return 0
    now = time.time() if now is None else now
    deleted = 0
    for group in groups:
        key = dict(group.get("labels", {}))
        job = key.pop("job", "")
        try:
            pushed_at = float(group["push_time_seconds"]["metrics"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            continue
        if not job.startswith("medrl_") or now - pushed_at <= max_age_seconds:
            continue
        try:
            delete_from_gateway(url, job=job, grouping_key=key, timeout=10)
            deleted += 1
        except Exception as err:
            log.warning("metrics group of %s not deleted from %s: %s", job, PUSHGATEWAY_ENV, type(err).__name__)
    if deleted:
        log.info("removed %d metrics group(s) older than %.0f h from the Pushgateway", deleted, max_age_seconds / 3600)
    return deleted
